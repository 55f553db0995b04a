"""One worker process's inference runtime: model, engine, Redis and the event publisher.

`INFERENCE_BACKEND=openai` sends requests to an OpenAI-compatible server instead of a model in
this process. In process, the batching back-end follows the model's architecture: continuous
batching where transformers supports it, the static streaming batcher for DeepSeek-V2/V3
(MoE + MLA).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from inference.admission import DEFAULT_SHED_AFTER_S, Fleet, WorkerCapacity, worker_name
from inference.contracts import PromptMessage, Queue
from inference.engine import Engine, EngineLimits
from inference.envvars import EnvSettingError, positive_float, positive_int
from inference.events import EventPublisher
from inference.loading import ModelSettings, load_model_and_tokenizer
from inference.openai_settings import Backend, OpenAISettings, backend_from_env
from inference.prompt import build_messages, render_prompt
from inference.service import AnswerService

if TYPE_CHECKING:
    from inference.cb_engine import BatchingOptions

logger = logging.getLogger(__name__)

# transformers' continuous batching fails inside the paged cache for these (an index_copy_
# shape error: MLA's key and value head sizes differ; seen with 5.23 and 5.24, and pinned by
# tests/inference/test_engine.py): they get the static batcher.
NO_CONTINUOUS_BATCHING = frozenset({"deepseek_v2", "deepseek_v3"})


# The chat side's /metrics reads this hash (chatplatform/metrics.py): engine figures of the
# worker that wrote last. Once a second is plenty for a scrape and costs one HSET.
STATS_KEY = "inference:stats"
STATS_INTERVAL_S = 1.0
STATS_TTL_S = 60  # a dead worker's figures expire instead of looking current forever


class StatsReporter:
    """Writes batch size and recent tokens/s to Redis every STATS_INTERVAL_S, in a thread."""

    def __init__(self, engine: Engine, client: redis.Redis, fleet: Fleet | None = None) -> None:
        self._engine = engine
        self._redis = client
        # This worker's capacity for the fleet's admission (inference/admission.py); only
        # the in-process engine has the figures.
        self._fleet = fleet if isinstance(engine, Engine) else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference-stats", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        last_tokens, last_time = self._engine.tokens_generated, time.monotonic()
        while not self._stop.wait(STATS_INTERVAL_S):
            tokens, now = self._engine.tokens_generated, time.monotonic()
            figures = {
                "batch_size": self._engine.running_count,
                "tokens_per_s": round((tokens - last_tokens) / (now - last_time), 2),
                "updated_at": time.time(),
            }
            last_tokens, last_time = tokens, now
            try:
                self._redis.hset(STATS_KEY, mapping=figures)
                self._redis.expire(STATS_KEY, STATS_TTL_S)
                if self._fleet is not None and self._fleet.own_worker is not None:
                    self._fleet.publish(
                        WorkerCapacity(
                            worker=self._fleet.own_worker,
                            max_running=self._engine.limits.max_running,
                            running=self._engine.running_count,
                            waiting=self._engine.waiting_count,
                            service_s=self._engine.costs.service_s,
                        )
                    )
            except redis.RedisError as error:  # figures are best effort; answers are not
                logger.warning("could not write inference stats: %s", error)


WARMUP_GROUP = "inference.warmup"  # nobody listens; the send only opens the connection


class StaticBatchingNotAllowedError(EnvSettingError):
    """A model that only the static batcher can run, without the setting that accepts it."""


def static_batching_allowed(env: Mapping[str, str] | None = None) -> bool:
    """`INFERENCE_ALLOW_STATIC_BATCHING`: 1/true accepts the static batcher for MoE models."""
    env = os.environ if env is None else env
    raw = (env.get("INFERENCE_ALLOW_STATIC_BATCHING") or "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise EnvSettingError(f"INFERENCE_ALLOW_STATIC_BATCHING={raw!r} is not 1/true or 0/false")


def batching_options_from_env(env: Mapping[str, str] | None = None) -> BatchingOptions:
    """`INFERENCE_CPU_ATTENTION`: `varlen` (default) runs continuous batching's attention per
    request on CPU (`inference/paged_attention.py`); `dense` keeps transformers' batch-wide
    SDPA, the way back should a model or transformers version need it."""
    from inference.cb_engine import BatchingOptions

    env = os.environ if env is None else env
    raw = (env.get("INFERENCE_CPU_ATTENTION") or "").strip().lower()
    if raw not in ("", "varlen", "dense"):
        raise EnvSettingError(f"INFERENCE_CPU_ATTENTION={raw!r} is not varlen or dense")
    return BatchingOptions(varlen_attention=raw != "dense")


def make_engine(
    model: Any,
    tokenizer: Any,
    limits: EngineLimits,
    allow_static: bool = False,
    options: BatchingOptions | None = None,
) -> Engine:
    """Continuous batching; for DeepSeek-V2/V3 (MoE, MLA), which transformers' manager cannot
    run, the static batcher only when `allow_static` says so: its time to first token under
    load grows with the longest answer in flight, so production must choose it knowingly or
    serve those models through the OpenAI-compatible back end (vLLM / SGLang)."""
    model_type = model.config.model_type
    if model_type in NO_CONTINUOUS_BATCHING:
        if not allow_static:
            raise StaticBatchingNotAllowedError(
                f"{model_type} (MoE, MLA attention) cannot run on transformers' continuous "
                "batching. Serve it with vLLM or SGLang (INFERENCE_BACKEND=openai, see the "
                "README), or set INFERENCE_ALLOW_STATIC_BATCHING=1 to accept the in-process "
                "static batcher (a request waits for the running batch to finish)."
            )
        from inference.static_engine import StaticBatchEngine

        logger.warning(
            "%s: static batching (INFERENCE_ALLOW_STATIC_BATCHING=1): time to first token "
            "under load grows with the longest answer in flight",
            model_type,
        )
        return StaticBatchEngine(model, tokenizer, limits)
    from inference.cb_engine import ContinuousBatchingEngine

    return ContinuousBatchingEngine(model, tokenizer, limits, options)


def warmup_messages() -> list[PromptMessage]:
    """A realistic prompt (instructions, grounding, a question) to warm the engine with."""
    return build_messages(
        "You are the support assistant of an online shop. Answer briefly and politely.",
        [("How long does delivery take?", "Orders arrive within three to five working days.")],
        [],
        "Where is my order?",
    )


def warmup_prompt(tokenizer: Any, limits: EngineLimits) -> list[int]:
    return render_prompt(tokenizer, warmup_messages(), limits.max_prompt_tokens)


def limits_from_env(env: Mapping[str, str] | None = None) -> EngineLimits:
    """The engine's limits from `INFERENCE_MAX_*`; a bad value is refused naming it."""
    env = os.environ if env is None else env
    defaults = EngineLimits()
    return EngineLimits(
        max_running=positive_int(env, "INFERENCE_MAX_RUNNING", defaults.max_running),
        max_new_tokens=positive_int(env, "INFERENCE_MAX_NEW_TOKENS", defaults.max_new_tokens),
        max_prompt_tokens=positive_int(
            env, "INFERENCE_MAX_PROMPT_TOKENS", defaults.max_prompt_tokens
        ),
    )


def start_inprocess_engine() -> Engine:
    """The model loaded in this process, its batching engine started and warmed up."""
    settings = ModelSettings.from_env()
    started = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(settings)
    limits = limits_from_env()
    engine = make_engine(
        model,
        tokenizer,
        limits,
        allow_static=static_batching_allowed(),
        options=batching_options_from_env(),
    )
    engine.warmup(warmup_prompt(tokenizer, limits))
    logger.info(
        "model %s (quantization %s, device %s) ready in %.1f s; step costs %s",
        settings.model,
        settings.quantization.value,
        settings.device,
        time.perf_counter() - started,
        engine.costs,
    )
    return engine


@dataclass
class Runtime:
    engine: Engine
    publisher: EventPublisher
    redis: redis.Redis
    service: AnswerService
    stats: StatsReporter

    @classmethod
    def start(
        cls,
        redis_url: str,
        finalize: Callable[[dict[str, Any]], None],
        hand_back: Callable[[dict[str, Any]], None] | None = None,
    ) -> Runtime:
        # INFERENCE_BACKEND: the model in this process (default), or an OpenAI-compatible
        # server (inference/openai_engine.py); either way the same service and stream events.
        if backend_from_env() is Backend.OPENAI:
            from inference.openai_engine import start_openai_engine

            engine: Any = start_openai_engine(
                OpenAISettings.from_env(), limits_from_env(), warmup_messages()
            )
            render = engine.render
        else:
            engine, render = start_inprocess_engine(), None
        client = redis.Redis.from_url(redis_url)
        publisher = EventPublisher(redis_url)
        # Open the channel layer's connection now, not on the first customer's first delta.
        publisher.publish(WARMUP_GROUP, {"type": "inference.warmup"}).result(timeout=30)
        fleet = Fleet(client, Queue.INFERENCE.value, own_worker=worker_name())
        shed_after_s = positive_float(os.environ, "INFERENCE_SHED_AFTER_S", DEFAULT_SHED_AFTER_S)
        service = AnswerService(
            engine,
            client,
            publisher,
            finalize,
            render=render,
            fleet=fleet,
            hand_back=hand_back,
            shed_after_s=shed_after_s,
        )
        stats = StatsReporter(engine, client, fleet)
        return cls(engine=engine, publisher=publisher, redis=client, service=service, stats=stats)

    def close(self) -> None:
        self.stats.close()
        self.engine.close()
        self.publisher.close()
        self.redis.close()
