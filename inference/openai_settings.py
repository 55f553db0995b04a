"""Which back end answers (`INFERENCE_BACKEND`), and the OpenAI-compatible server's settings.

`inprocess` (the default) runs the model inside the worker through transformers; `openai`
sends every request to an OpenAI-compatible server instead: vLLM, SGLang, or a hosted API such
as DeepSeek's. Read from the environment and checked when the worker starts: a bad value
stops it with a message naming the variable, like every other worker setting (`envvars.py`).
The API key is kept out of `repr` and every log line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

from inference.envvars import EnvSettingError, positive_float, positive_int


class Backend(StrEnum):
    INPROCESS = "inprocess"  # transformers in this process (inference/engine.py)
    OPENAI = "openai"  # an OpenAI-compatible server (inference/openai_engine.py)


# Requests in flight at the server at once. Beyond this the worker keeps them in its own
# earliest-deadline-first queue, where a late request cannot delay one that can still make
# its deadline; the server (vLLM's own scheduler is first come, first served) never sees more.
DEFAULT_MAX_CONCURRENCY = 32
# A failed call (server down, refused, 429, 5xx, a stream cut, a malformed chunk, a stall) is
# retried until this many seconds after the customer's message arrived; then the customer gets
# the chat error `answer_failed`. Shorter than the chat layer's answer timeout (60 s by
# default), so that the customer hears the worker's answer, not the chat's timeout.
DEFAULT_RETRY_WINDOW_S = 30.0
# No byte from the server for this long (waiting for the first token, or between two chunks):
# the call is taken for stuck, aborted (which frees its slot at the server) and retried.
DEFAULT_STALL_TIMEOUT_S = 10.0
# Placeholder key for servers started without one (vLLM, SGLang): the client needs a string.
NO_API_KEY = "EMPTY"


def backend_from_env(env: Mapping[str, str] | None = None) -> Backend:
    env = os.environ if env is None else env
    raw = (env.get("INFERENCE_BACKEND") or "").strip().lower() or Backend.INPROCESS.value
    try:
        return Backend(raw)
    except ValueError:
        choices = ", ".join(b.value for b in Backend)
        raise EnvSettingError(f"INFERENCE_BACKEND={raw!r} is not one of: {choices}") from None


def _required(env: Mapping[str, str], name: str, why: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise EnvSettingError(f"{name} is not set: {why}")
    return value


def _base_url(env: Mapping[str, str]) -> str:
    name = "INFERENCE_OPENAI_BASE_URL"
    raw = _required(env, name, "INFERENCE_BACKEND=openai needs the server's URL")
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise EnvSettingError(
            f"{name}={raw!r} is not an http(s) URL (e.g. http://vllm:8000/v1, "
            "https://api.deepseek.com)"
        )
    try:
        parts.port  # noqa: B018 - a non-numeric or out-of-range port raises here
    except ValueError:
        raise EnvSettingError(f"{name}={raw!r} has an invalid port") from None
    return raw.rstrip("/")


@dataclass(frozen=True)
class OpenAISettings:
    base_url: str  # e.g. http://vllm:8000/v1
    model: str  # the served model's name (vLLM: --served-model-name, else the folder path)
    api_key: str = field(default=NO_API_KEY, repr=False)  # never logged
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    retry_window_s: float = DEFAULT_RETRY_WINDOW_S
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OpenAISettings:
        env = os.environ if env is None else env
        return cls(
            base_url=_base_url(env),
            model=_required(
                env,
                "INFERENCE_OPENAI_MODEL",
                "INFERENCE_BACKEND=openai needs the served model's name",
            ),
            api_key=(env.get("INFERENCE_OPENAI_API_KEY") or "").strip() or NO_API_KEY,
            max_concurrency=positive_int(
                env, "INFERENCE_OPENAI_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY
            ),
            retry_window_s=positive_float(
                env, "INFERENCE_OPENAI_RETRY_WINDOW_S", DEFAULT_RETRY_WINDOW_S
            ),
            stall_timeout_s=positive_float(
                env, "INFERENCE_OPENAI_STALL_TIMEOUT_S", DEFAULT_STALL_TIMEOUT_S
            ),
        )

    @property
    def has_api_key(self) -> bool:
        return self.api_key != NO_API_KEY
