"""docker-compose.yml: what the production topology relies on, checked without Docker (the
development machines have no engine): the web health probe against a real server, and that
the model setting points into the mounted weights."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DEFAULT = re.compile(r"^\$\{(?P<name>\w+):-(?P<default>[^}]*)\}$")


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def default_of(value: str) -> str:
    """The value compose uses for `${NAME:-default}` when NAME is not set."""
    match = COMPOSE_DEFAULT.match(value)
    assert match, f"not a ${{NAME:-default}} value: {value!r}"
    return match["default"]


@pytest.mark.django_db(transaction=True)
def test_web_health_probe_passes_django_host_validation(live_server, settings) -> None:
    # given: the server with compose's default ALLOWED_HOSTS, and the probe aimed at it
    web = compose()["services"]["web"]
    allowed_hosts = default_of(web["environment"]["ALLOWED_HOSTS"])
    settings.ALLOWED_HOSTS = allowed_hosts.split(",")
    command = web["healthcheck"]["test"]
    assert command[:3] == ["CMD", "python", "-c"]
    port = live_server.url.rsplit(":", 1)[1]
    probe = command[3].replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
    assert probe != command[3]
    # when
    run = subprocess.run(
        [sys.executable, "-c", probe],
        env={"ALLOWED_HOSTS": allowed_hosts},
        capture_output=True,
        text=True,
        timeout=30,
    )
    # then: /healthz itself answered, not a 400 for a disallowed Host: 200 when the session's
    # platform workers of other tests are up and beating, 503 when no worker runs
    assert "HTTP Error 400" not in run.stderr
    assert run.returncode == 0 or "HTTP Error 503" in run.stderr, run.stderr


def test_chat_model_defaults_to_a_folder_in_the_mounted_models() -> None:
    services = compose()["services"]
    inference = services["inference"]
    mount = next(v for v in inference["volumes"] if v.endswith(":/models:ro"))
    assert mount
    for service in ("web", "inference"):
        model = default_of(services[service]["environment"]["CHAT_MODEL"])
        assert model.startswith("/models/"), (service, model)
    assert inference["environment"]["HF_HUB_OFFLINE"] == "1"
