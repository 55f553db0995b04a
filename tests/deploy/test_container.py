"""The container entrypoint builds connection URLs that parse back to the parts, whatever the
password holds, and lets a replica be probed by its own address."""

from __future__ import annotations

import subprocess
import sys

import dj_database_url
import pytest
from redis.connection import parse_url

from chatplatform.container import (
    MissingSetting,
    allowed_hosts_with,
    environment_with_urls,
    own_addresses,
)

HOSTILE_PASSWORDS = ["p@ss/word", "a:b@c#d?e%f", "sp ace+plus", "ünï€ode", "%2F", "x]y[z"]


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
def test_database_url_keeps_any_password(password: str) -> None:
    # given
    env = {
        "POSTGRES_HOST": "db.internal",
        "POSTGRES_DB": "chat/platform",
        "POSTGRES_USER": "app@team",
        "POSTGRES_PASSWORD": password,
    }
    # when
    url = environment_with_urls(env)["DATABASE_URL"]
    # then
    config = dj_database_url.parse(url)
    assert config["HOST"] == "db.internal"
    assert config["PORT"] == 5432
    assert config["PASSWORD"] == password
    assert config["USER"] == "app@team"
    assert config["NAME"] == "chat/platform"


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
def test_redis_url_keeps_any_password(password: str) -> None:
    env = {"REDIS_HOST": "redis", "REDIS_PASSWORD": password, "REDIS_DB": "2"}
    url = environment_with_urls(env)["REDIS_URL"]
    parsed = parse_url(url)
    assert parsed["password"] == password
    assert (parsed["host"], parsed["port"], parsed["db"]) == ("redis", 6379, 2)


def test_redis_tls_and_no_password() -> None:
    url = environment_with_urls({"REDIS_HOST": "r", "REDIS_TLS": "true"})["REDIS_URL"]
    assert url == "rediss://r:6379/0"


def test_urls_already_set_are_kept_and_nothing_is_built_without_a_host() -> None:
    env = {"DATABASE_URL": "sqlite:///x.db", "REDIS_HOST": "", "POSTGRES_PASSWORD": "x"}
    result = environment_with_urls(env)
    assert result["DATABASE_URL"] == "sqlite:///x.db"
    assert "REDIS_URL" not in result


def test_a_missing_part_is_refused_with_its_name() -> None:
    with pytest.raises(MissingSetting, match="POSTGRES_PASSWORD"):
        environment_with_urls({"POSTGRES_HOST": "db", "POSTGRES_DB": "d", "POSTGRES_USER": "u"})


def test_own_addresses_join_a_set_allowed_hosts_only() -> None:
    addresses = own_addresses()
    assert "127.0.0.1" in addresses
    assert allowed_hosts_with("chat.example.com", ["127.0.0.1"]) == "chat.example.com,127.0.0.1"
    assert allowed_hosts_with("*", ["127.0.0.1"]) == "*"
    assert allowed_hosts_with("", ["127.0.0.1"]) == ""


def test_entrypoint_execs_the_command_with_the_urls() -> None:
    # given: the parts, as compose or a Kubernetes Secret hands them over
    env = {
        "PATH": "/usr/bin:/bin",
        "POSTGRES_HOST": "db",
        "POSTGRES_DB": "d",
        "POSTGRES_USER": "u",
        "POSTGRES_PASSWORD": "p@ss/word",
    }
    # when: the entrypoint runs a command that prints what it received
    run = subprocess.run(
        [sys.executable, "-m", "chatplatform.container", sys.executable, "-c",
         "import os; print(os.environ['DATABASE_URL'])"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    # then
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "postgres://u:p%40ss%2Fword@db:5432/d"


def test_entrypoint_refuses_a_missing_part_clearly() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "chatplatform.container", "true"],
        env={"PATH": "/usr/bin:/bin", "POSTGRES_HOST": "db"},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 2
    assert "POSTGRES_USER is not set" in run.stderr
