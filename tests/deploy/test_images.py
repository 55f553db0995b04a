"""The images, checked without a Docker engine: what the build context leaves out, that the
final stages run unprivileged, that the lock files reflect requirements.txt, and that the web
image's processes really run without torch (the premise of the slim image)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCKS = REPO / "deploy" / "requirements"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", re.MULTILINE)
# Packages only the model side needs; none may reach the web image.
MODEL_SIDE = {"torch", "transformers", "sentence-transformers", "torchao", "accelerate", "triton"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    text = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
    return {canonical(name): version for name, version in PIN.findall(text)}


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_build_context_leaves_out_weights_secrets_and_state() -> None:
    ignored = dockerignore()
    for pattern in (".git", ".venv", "var", "models", ".env", ".env.*", "tests"):
        assert pattern in ignored, pattern
    assert "!.env.example" in ignored  # the template is harmless; real .env files are not


def test_final_stages_run_as_an_unprivileged_user() -> None:
    stages = re.split(r"^FROM ", (REPO / "Dockerfile").read_text(), flags=re.MULTILINE)[1:]
    finals = {stage.split()[2]: stage for stage in stages if " AS " in stage.split("\n")[0]}
    for target in ("web", "inference"):
        assert re.search(r"^USER 10001$", finals[target], re.MULTILINE), target
        assert "--require-hashes" in (REPO / "Dockerfile").read_text()
    assert "--proxy-headers" in finals["web"]
    assert "chatplatform.serve" in finals["web"]


def test_every_locked_requirement_has_hashes() -> None:
    for lock in ("web.lock", "encoder-model.lock", "inference.lock"):
        entries = re.split(r"\n(?=[A-Za-z])", (LOCKS / lock).read_text())
        packages = [entry for entry in entries if PIN.match(entry)]
        assert packages, lock
        for entry in packages:
            assert "--hash=sha256:" in entry, (lock, entry.split()[0])


def test_locks_reflect_requirements_txt() -> None:
    required = pins(REPO / "requirements.txt")
    inference = pins(LOCKS / "inference.lock")
    web = pins(LOCKS / "web.lock") | pins(LOCKS / "encoder-model.lock")
    # the GPU image has exactly requirements.txt's versions (`make lock` after a change)
    for name, version in required.items():
        assert inference.get(name) == version, f"{name}=={version}: run `make lock`"
    # the web image: the same versions, a subset, and nothing of the model side
    for name, version in web.items():
        if name in required:
            assert required[name] == version, f"{name}=={version}: run `make lock`"
        assert inference.get(name) == version, f"{name}: images disagree; run `make lock`"
    assert not MODEL_SIDE & set(web), MODEL_SIDE & set(web)
    assert not [name for name in web if name.startswith("nvidia-")]


# Runs in a fresh interpreter that can import only the standard library, this project and the
# packages of the web image's lock (plus the venv's own pip and setuptools): the web process's
# modules (ASGI app, URLs, consumer, the CPU worker's tasks) must import. Optional imports
# (greenlet, torch in some libraries) take their fallback, as they will in the image.
SLIM_PROCESS = """
import importlib.abc, importlib.metadata, json, os, re, sys

allowed = set(json.loads(os.environ["WEB_IMAGE_PACKAGES"])) | {"pip", "setuptools"}
owners = importlib.metadata.packages_distributions()

def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()

class OnlyTheWebImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        dists = {canonical(d) for d in owners.get(name.split(".")[0], [])}
        if dists and not dists & allowed:
            raise ImportError(f"{name} ({sorted(dists)}) is not in the web image")
        return None

sys.meta_path.insert(0, OnlyTheWebImage())
import django
django.setup()
import chatplatform.asgi, chatplatform.urls, chatplatform.celery_app
from django.urls import get_resolver
get_resolver().url_patterns
from chatplatform.celery_app import app
app.loader.import_default_modules()
import chatplatform.chat.consumers, chatplatform.chat.tasks, chatplatform.dashboards.gaps
import chatplatform.serve, chatplatform.probe, chatplatform.container
from channels.layers import get_channel_layer
get_channel_layer()  # the Redis channel layer's backend
from cache.encoder import default_model_path
import onnxruntime, tokenizers  # the encoder (cache.encoder imports them when it loads)
assert (default_model_path() / "tokenizer.json").exists()
from sklearn.cluster import AgglomerativeClustering  # the FAQ-gap page's clustering
import psycopg  # PostgreSQL
print("imported")
"""


def test_web_processes_run_on_what_the_web_image_has(tmp_path: Path) -> None:
    # given: only the web image's packages importable
    web = set(pins(LOCKS / "web.lock")) | set(pins(LOCKS / "encoder-model.lock"))
    # when
    run = subprocess.run(
        [sys.executable, "-c", SLIM_PROCESS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"DJANGO_SETTINGS_MODULE": "chatplatform.settings.local",
             "VAR_DIR": str(tmp_path), "PATH": "/usr/bin:/bin",
             "WEB_IMAGE_PACKAGES": json.dumps(sorted(web))},
    )  # fmt: skip
    # then
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("imported")
