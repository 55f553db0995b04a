"""The `openai` back end's pure parts: settings read at start, fault classes, the retry rule,
and the messages sent to the server. (Against the real server: test_openai_backend.py.)"""

from __future__ import annotations

import email.utils

import httpx2
import openai
import pytest

from inference.envvars import EnvSettingError
from inference.openai_engine import chat_messages
from inference.openai_faults import (
    BACKOFF_S,
    Fault,
    FaultKind,
    MalformedChunkError,
    StreamCutError,
    classify,
    parse_retry_after,
    retry_delay_s,
)
from inference.openai_settings import (
    DEFAULT_MAX_CONCURRENCY,
    NO_API_KEY,
    Backend,
    OpenAISettings,
    backend_from_env,
)
from inference.prompt import build_messages, fold_system

GOOD = {"INFERENCE_OPENAI_BASE_URL": "http://vllm:8000/v1", "INFERENCE_OPENAI_MODEL": "ds"}


def test_backend_defaults_to_inprocess_and_reads_openai() -> None:
    assert backend_from_env({}) is Backend.INPROCESS
    assert backend_from_env({"INFERENCE_BACKEND": " "}) is Backend.INPROCESS
    assert backend_from_env({"INFERENCE_BACKEND": "OpenAI"}) is Backend.OPENAI


def test_unknown_backend_is_refused_naming_the_variable() -> None:
    with pytest.raises(EnvSettingError, match="^INFERENCE_BACKEND='vllm' is not one of"):
        backend_from_env({"INFERENCE_BACKEND": "vllm"})


def test_openai_settings_read_values_and_defaults() -> None:
    settings = OpenAISettings.from_env({**GOOD, "INFERENCE_OPENAI_BASE_URL": "https://h/v1/"})
    assert settings.base_url == "https://h/v1" and settings.model == "ds"
    assert settings.max_concurrency == DEFAULT_MAX_CONCURRENCY
    assert settings.api_key == NO_API_KEY and not settings.has_api_key
    tuned = OpenAISettings.from_env(
        {**GOOD, "INFERENCE_OPENAI_MAX_CONCURRENCY": "4", "INFERENCE_OPENAI_API_KEY": "sk-1"}
    )
    assert tuned.max_concurrency == 4 and tuned.has_api_key


def test_the_api_key_never_shows_in_the_settings_repr() -> None:
    settings = OpenAISettings.from_env({**GOOD, "INFERENCE_OPENAI_API_KEY": "sk-secret-123"})
    assert "sk-secret-123" not in repr(settings) and "sk-secret-123" not in str(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INFERENCE_OPENAI_MODEL": "ds"}, "^INFERENCE_OPENAI_BASE_URL is not set"),
        ({**GOOD, "INFERENCE_OPENAI_MODEL": " "}, "^INFERENCE_OPENAI_MODEL is not set"),
        ({**GOOD, "INFERENCE_OPENAI_BASE_URL": "vllm:8000"}, "not an http"),
        ({**GOOD, "INFERENCE_OPENAI_BASE_URL": "ftp://h/v1"}, "not an http"),
        ({**GOOD, "INFERENCE_OPENAI_BASE_URL": "http://h:port/v1"}, "invalid port"),
        ({**GOOD, "INFERENCE_OPENAI_MAX_CONCURRENCY": "0"}, "^INFERENCE_OPENAI_MAX_CONCURRENCY"),
        ({**GOOD, "INFERENCE_OPENAI_RETRY_WINDOW_S": "-1"}, "^INFERENCE_OPENAI_RETRY_WINDOW_S"),
        ({**GOOD, "INFERENCE_OPENAI_STALL_TIMEOUT_S": "x"}, "^INFERENCE_OPENAI_STALL_TIMEOUT_S"),
    ],
)
def test_bad_openai_settings_are_refused_naming_the_variable(env: dict, message: str) -> None:
    with pytest.raises(EnvSettingError, match=message):
        OpenAISettings.from_env(env)


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://vllm/v1/chat/completions")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    classes = {429: openai.RateLimitError, 400: openai.BadRequestError}
    error_class = classes.get(status, openai.InternalServerError)
    return error_class(f"HTTP {status}", response=response, body=None)


def test_faults_are_classified_from_what_the_client_raises() -> None:
    request = httpx2.Request("POST", "http://vllm/v1/chat/completions")
    assert classify(openai.APIConnectionError(request=request)).kind is FaultKind.UNREACHABLE
    assert classify(openai.APITimeoutError(request=request)).kind is FaultKind.STALLED
    assert classify(status_error(500)).kind is FaultKind.SERVER_ERROR
    assert classify(status_error(503)).kind is FaultKind.SERVER_ERROR
    assert classify(StreamCutError("cut")).kind is FaultKind.STREAM_CUT
    assert classify(MalformedChunkError("x")).kind is FaultKind.MALFORMED
    in_stream = openai.APIError("overloaded", request=request, body=None)
    assert classify(in_stream).kind is FaultKind.STREAM_CUT
    rejected = classify(status_error(400))
    assert rejected.kind is FaultKind.REJECTED and not rejected.retryable


def test_rate_limit_carries_the_servers_retry_after() -> None:
    fault = classify(status_error(429, {"Retry-After": "2"}))
    assert fault.kind is FaultKind.RATE_LIMITED and fault.retry_after_s == 2.0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    when = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(when, now=1_000_000) == pytest.approx(30)
    assert parse_retry_after("-3") == 0.0


def test_retry_waits_for_retry_after_or_backs_off_within_the_window() -> None:
    limited = Fault(FaultKind.RATE_LIMITED, "429", retry_after_s=1.0)
    assert retry_delay_s(limited, 0, now=100.0, give_up_at=130.0) == 1.0
    down = Fault(FaultKind.UNREACHABLE, "refused")
    delays = [retry_delay_s(down, attempt, 100.0, 130.0) for attempt in range(8)]
    assert delays[: len(BACKOFF_S)] == list(BACKOFF_S) and delays[-1] == BACKOFF_S[-1]


def test_retry_gives_up_when_the_wait_ends_past_the_window_or_cannot_help() -> None:
    limited = Fault(FaultKind.RATE_LIMITED, "429", retry_after_s=600.0)
    assert retry_delay_s(limited, 0, now=100.0, give_up_at=130.0) is None
    down = Fault(FaultKind.UNREACHABLE, "refused")
    assert retry_delay_s(down, 4, now=129.0, give_up_at=130.0) is None
    assert retry_delay_s(Fault(FaultKind.REJECTED, "400"), 0, 100.0, 130.0) is None


def test_the_server_gets_the_same_stable_prefix_turns_as_the_in_process_prompt() -> None:
    messages = build_messages(
        "You are a shop.", [("Delivery?", "3-5 days.")], [("user", "hi"), ("assistant", "hello")],
        "Where is my order?",
    )  # fmt: skip
    sent = chat_messages(messages)
    assert sent == fold_system(messages)
    # the site's instructions and FAQ grounding open the first turn: a prefix shared by every
    # conversation of the site, whatever the customer asks
    assert sent[0]["content"].startswith("You are a shop.")
    assert sent[-1]["content"].endswith("Where is my order?\n</customer>")


def test_the_concurrency_window_is_the_back_ends_running_limit() -> None:
    # the fleet's capacity figures and the hand-back estimate read it as max_running
    from inference.engine import EngineLimits
    from inference.openai_engine import OpenAIEngine

    engine = OpenAIEngine(
        OpenAISettings("http://127.0.0.1:9/v1", "ds", max_concurrency=3), EngineLimits()
    )
    try:
        assert engine.limits.max_running == 3
        assert engine.estimate_start_s(deadline=0.0) >= 0.0  # a slot is free: next step
    finally:
        engine.close()
