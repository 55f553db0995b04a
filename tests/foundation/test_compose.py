"""docker-compose.yml: what the production topology relies on, checked without Docker (the
development machines have no engine; `make deploy-check` validates it against the
compose-spec schema): the web health probe against a real server, and each point of the
deployment review (one build per image, no fixed host port on scaled services, secrets and
settings through .env, workers' health checks, grace periods, GPUs, Redis limits)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from chatplatform.container import allowed_hosts_with

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DEFAULT = re.compile(r"^\$\{(?P<name>\w+):-(?P<default>[^}]*)\}$")
REQUIRED_VARIABLE = re.compile(r"\$\{(\w+):\?")
INFERENCE_SERVICES = ("inference-gpu0", "inference-gpu1", "inference-vllm")
ANSWER_TIMEOUT_S = 60  # CHAT_ANSWER_TIMEOUT_S's default


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def default_of(value: str) -> str:
    """The value compose uses for `${NAME:-default}` when NAME is not set."""
    match = COMPOSE_DEFAULT.match(value)
    assert match, f"not a ${{NAME:-default}} value: {value!r}"
    return match["default"]


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match[1]) * (60 if match[2] == "m" else 1)


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


@pytest.mark.django_db(transaction=True)
def test_web_health_probe_passes_django_host_validation(live_server, settings) -> None:
    # given: the server with .env.example's ALLOWED_HOSTS as the entrypoint extends it with
    # the container's own addresses, and compose's probe aimed at it
    command = services()["web"]["healthcheck"]["test"]
    assert command[:4] == ["CMD", "python", "-m", "chatplatform.probe"]
    url = command[4]
    path = url.split("8000", 1)[1]
    assert path == "/readyz"  # readiness of web itself: never the workers
    allowed = allowed_hosts_with(env_example()["ALLOWED_HOSTS"], ["127.0.0.1", "[::1]"])
    settings.ALLOWED_HOSTS = allowed.split(",")
    port = live_server.url.rsplit(":", 1)[1]
    # when
    run = subprocess.run(
        [sys.executable, "-m", "chatplatform.probe", url.replace(":8000", f":{port}")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    # then: readiness answered 200 (database and Redis are up; no worker is needed)
    assert run.returncode == 0, run.stderr


def test_chat_model_defaults_to_a_folder_in_the_mounted_models() -> None:
    for name in INFERENCE_SERVICES:
        inference = services()[name]
        assert any(v.endswith(":/models:ro") for v in inference["volumes"]), name
        model = default_of(inference["environment"]["CHAT_MODEL"])
        assert model.startswith("/models/"), (name, model)
        assert inference["environment"]["HF_HUB_OFFLINE"] == "1"


def test_every_required_variable_is_in_env_example_and_every_service_reads_it() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    required = set(REQUIRED_VARIABLE.findall(text))
    secrets = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "METRICS_BEARER_TOKEN", "SITE_ADDRESS"}
    assert secrets <= required
    example = env_example()
    assert not required - set(example), required - set(example)
    assert "SECRET_KEY" in example and "METRICS_BEARER_TOKEN" in example
    for name, service in services().items():
        if service.get("image", "").startswith("${"):  # the platform's own images
            assert service.get("env_file") == [".env"], name


def test_passwords_never_go_into_a_url_in_the_compose_file() -> None:
    for name, service in services().items():
        for key, value in (service.get("environment") or {}).items():
            assert not ("://" in str(value) and "PASSWORD" in str(value)), (name, key)
            assert key not in ("DATABASE_URL", "REDIS_URL"), (name, key)
    web = services()["web"]["environment"]
    assert web["POSTGRES_HOST"] == "postgres" and web["REDIS_HOST"] == "redis"


def test_only_the_proxy_publishes_host_ports_and_web_scales() -> None:
    published = {name for name, service in services().items() if service.get("ports")}
    assert published == {"proxy"}
    caddyfile = (REPO / "deploy" / "caddy" / "Caddyfile").read_text()
    assert re.search(r"dynamic a web 8000", caddyfile)  # every replica of `--scale web=N`
    assert "respond /metrics 404" in caddyfile


def test_one_build_per_image() -> None:
    builds = {name: s["build"]["target"] for name, s in services().items() if "build" in s}
    assert sorted(builds.values()) == ["inference", "web"], builds
    images = {name: s.get("image") for name, s in services().items()}
    for name, service in services().items():
        if "build" in service:
            continue
        sharing = [other for other in builds if images[other] == images[name]]
        if sharing:
            assert service["pull_policy"] == "never", name  # never a second build or a pull


def test_beat_runs_once_in_its_own_service() -> None:
    for name, service in services().items():
        assert not re.search(r"(^| )-B( |$)", command_text(service)), name
    beat = services()["beat"]
    assert " beat " in f" {command_text(beat)} "
    assert beat["deploy"]["replicas"] == 1


def test_web_serves_behind_the_proxy_and_drains() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert '"--proxy-headers"' in dockerfile and "chatplatform.serve" in dockerfile
    web = services()["web"]
    assert "command" not in web  # the image's command
    assert seconds(web["stop_grace_period"]) > 20  # the drain's default timeout


def test_workers_have_health_checks_and_grace_for_answers() -> None:
    for name in ("worker-cpu", *INFERENCE_SERVICES):
        check = " ".join(services()[name]["healthcheck"]["test"])
        assert "inspect ping" in check and "chatplatform.container" in check, name
    for name in INFERENCE_SERVICES:
        assert seconds(services()[name]["stop_grace_period"]) >= ANSWER_TIMEOUT_S + 20, name


def test_each_gpu_worker_has_its_own_gpu_and_names_its_device() -> None:
    seen: set[str] = set()
    for name in ("inference-gpu0", "inference-gpu1"):
        service = services()[name]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert "count" not in device, name  # count: 1 gives every replica GPU 0
        (gpu,) = device["device_ids"]
        assert gpu not in seen
        seen.add(gpu)
        assert service["environment"]["INFERENCE_DEVICE"] == "cuda", name


def test_redis_has_a_password_and_evicts_only_expiring_keys() -> None:
    command = services()["redis"]["command"]
    assert command[command.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
    assert command[command.index("--maxmemory-policy") + 1] == "volatile-lru"
    assert "--maxmemory" in command


def test_prometheus_may_read_metrics_with_the_token() -> None:
    web = services()["web"]["environment"]
    assert web["METRICS_ALLOWED_IPS"] == ""  # any address on the internal network...
    assert web["METRICS_BEARER_TOKEN"].startswith("${METRICS_BEARER_TOKEN:?")  # ...with it
    prometheus = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    assert compose()["secrets"]["metrics_token"]["environment"] == "METRICS_BEARER_TOKEN"


def test_vllm_profile_serves_the_model_and_points_workers_at_it() -> None:
    vllm = services()["vllm"]
    args = vllm["command"]
    assert args[0] == "${CHAT_MODEL:-/models/deepseek-llm-7b-chat}"
    assert args[args.index("--quantization") + 1] == "fp8"
    assert "--enable-prefix-caching" in args
    workers = services()["inference-vllm"]
    assert vllm["profiles"] == workers["profiles"] == ["vllm"]
    env = workers["environment"]
    assert env["INFERENCE_BACKEND"] == "openai"
    assert env["INFERENCE_OPENAI_BASE_URL"] == "http://vllm:8000/v1"
    assert env["INFERENCE_OPENAI_MODEL"] == "${VLLM_SERVED_MODEL:-deepseek-chat}"
