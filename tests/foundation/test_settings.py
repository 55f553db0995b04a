"""Bad configuration stops the process at start with a message naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from chatplatform.settings.env import (
    get_from_env,
    one_of,
    positive_float,
    str_to_bool,
    str_to_list,
)

REPO = Path(__file__).resolve().parents[2]


def run_check(env_overrides: dict[str, str], settings_module: str = "chatplatform.settings.local"):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings_module, **env_overrides}
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "not a url at all"),
        ("DATABASE_URL", "mongodb://localhost/x"),
        ("REDIS_URL", "http://localhost:6379"),
        ("DEBUG", "maybe"),
        ("QUANTIZATION", "int3"),
        ("GPU_COST_PER_HOUR", "cheap"),
        ("GPU_COST_PER_HOUR", "-2"),
        ("GPU_COST_PER_HOUR", "nan"),
        ("GPU_COST_PER_HOUR", "0"),
    ],
)
def test_bad_setting_fails_at_start_naming_the_setting(name: str, value: str) -> None:
    # when the process starts with a bad value
    result = run_check({name: value})
    # then it refuses, and the message names the variable
    assert result.returncode != 0
    assert f"Setting {name}=" in result.stderr
    assert "ImproperlyConfigured" in result.stderr


def test_production_refuses_default_secret_key() -> None:
    result = run_check({"DEBUG": "false"}, "chatplatform.settings.production")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_refuses_debug_on() -> None:
    result = run_check(
        {"DEBUG": "true", "SECRET_KEY": "x" * 40}, "chatplatform.settings.production"
    )
    assert result.returncode != 0
    assert "DEBUG must be off" in result.stderr


def test_production_starts_with_proper_settings() -> None:
    result = run_check(
        {"DEBUG": "false", "SECRET_KEY": "s3cret-" * 8}, "chatplatform.settings.production"
    )
    assert result.returncode == 0, result.stderr


def test_get_from_env_casts_and_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_FLAG", "yes")
    monkeypatch.setenv("SOME_LIST", " a, b,,c ")
    monkeypatch.setenv("SOME_MODE", "INT8")
    assert get_from_env("SOME_FLAG", False, str_to_bool) is True
    assert get_from_env("SOME_LIST", [], str_to_list) == ["a", "b", "c"]
    assert get_from_env("SOME_MODE", "none", one_of("none", "int8")) == "int8"
    assert get_from_env("UNSET_VARIABLE_XYZ", 7, int) == 7
    monkeypatch.setenv("SOME_FLAG", "perhaps")
    with pytest.raises(ImproperlyConfigured, match="SOME_FLAG"):
        get_from_env("SOME_FLAG", False, str_to_bool)


@pytest.mark.parametrize("raw", ["0", "-2", "nan", "inf", "cheap"])
def test_positive_float_refuses_what_cannot_be_a_cost(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("GPU_COST_PER_HOUR", raw)
    with pytest.raises(ImproperlyConfigured, match=f"GPU_COST_PER_HOUR={raw!r}"):
        get_from_env("GPU_COST_PER_HOUR", 2.5, positive_float)
    monkeypatch.setenv("GPU_COST_PER_HOUR", "3.2")
    assert get_from_env("GPU_COST_PER_HOUR", 2.5, positive_float) == 3.2


def import_chat_config(env_overrides: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Import the chat's limits in a fresh process, as a web process does at start."""
    return subprocess.run(
        [sys.executable, "-c", "import chatplatform.chat.config"],
        cwd=REPO,
        env={**os.environ, **env_overrides},
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHAT_MAX_MESSAGE_CHARS", "0"),
        ("CHAT_MESSAGES_PER_MINUTE_PER_IP", "-5"),
        ("CHAT_CONNECTIONS_PER_IP", "many"),
        ("CHAT_ANSWER_TIMEOUT_S", "nan"),
        # shorter than two of the widget's 4-minute pings: open widgets would be closed
        ("CHAT_IDLE_TIMEOUT_S", "240"),
        ("CHAT_IDLE_TIMEOUT_S", "0"),
    ],
)
def test_chat_limit_that_would_refuse_everyone_fails_at_start(name: str, value: str) -> None:
    result = import_chat_config({name: value})
    assert result.returncode != 0
    assert f"Setting {name}={value!r} is invalid" in result.stderr


def test_chat_limits_accept_sensible_values() -> None:
    result = import_chat_config({"CHAT_IDLE_TIMEOUT_S": "900", "CHAT_MAX_MESSAGE_CHARS": "500"})
    assert result.returncode == 0, result.stderr


def demo_model_under(settings_module: str, env_overrides: dict[str, str]) -> str:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings_module, **env_overrides}
    env.pop("CHAT_MODEL", None)
    env.pop("DEMO_MODEL", None)
    script = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.DEMO_MODEL)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_production_never_guesses_a_demo_model() -> None:
    # a production web pod without CHAT_MODEL (the chart gives it to the inference pods only)
    production = {"DEBUG": "false", "SECRET_KEY": "s3cret-" * 8}
    assert demo_model_under("chatplatform.settings.production", production) == "False"
    # while `make run` without CHAT_MODEL runs the offline model, a demo
    assert demo_model_under("chatplatform.settings.local", {}) == "True"
