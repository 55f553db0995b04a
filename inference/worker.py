"""The Django-free Celery worker that answers on the `inference` queue.

Start it (one model copy per process; threads share it):

    celery -A inference.worker worker -Q inference --pool threads -c 64

The thread pool must be at least the engine's batch size (`INFERENCE_MAX_RUNNING`, 32 by
default): each running request holds one task thread while it streams. Settings (env):
`REDIS_URL` (broker and channel layer), `CHAT_MODEL`, `QUANTIZATION`, `INFERENCE_MAX_RUNNING`,
`INFERENCE_VISIBILITY_TIMEOUT` (seconds before Redis redelivers an unacknowledged task; 20 by
default, see `DEFAULT_VISIBILITY_TIMEOUT_S`).

The model loads once at worker start (`worker_init`, before any task is consumed) and is
warmed up there, so the first customer does not pay for it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import redis
from celery import Celery, signals
from celery.exceptions import Reject

from inference.broker import TRANSPORT, redelivery_within_s, transport_options
from inference.contracts import Queue, TaskName
from inference.envvars import EnvSettingError, positive_int
from inference.service import STALE_AFTER_S

logger = logging.getLogger(__name__)

# Errors that mean "Redis is unreachable right now", not "this request is bad": the result
# future of a stream event that never reached Redis times out with the builtin TimeoutError.
REDIS_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, TimeoutError)

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

# Redis redelivers a task nobody acknowledged within this many seconds (acks_late: the ack
# comes when the answer is done), which is how a killed worker's request reaches another
# worker. It must come back well before the service refuses it as stale (STALE_AFTER_S after
# its deadline) and, better, before the chat layer gives the customer up (60 s answer
# timeout by default): 20 s plus one sweep (5 s) leaves the model over half a minute to
# answer. A longer answer is not redelivered while it runs: the worker renews the deliveries
# it holds before every sweep (inference/broker.py).
DEFAULT_VISIBILITY_TIMEOUT_S = 20


def visibility_timeout_from_env(env: Mapping[str, str]) -> int:
    """`INFERENCE_VISIBILITY_TIMEOUT`; refused when redelivery would come after staleness."""
    timeout = positive_int(env, "INFERENCE_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT_S)
    if redelivery_within_s(timeout) >= STALE_AFTER_S:
        raise EnvSettingError(
            f"INFERENCE_VISIBILITY_TIMEOUT={timeout}: a killed worker's request would be "
            f"redelivered up to {redelivery_within_s(timeout)} s later, when it is refused as "
            f"stale (after {STALE_AFTER_S:.0f} s); use {DEFAULT_VISIBILITY_TIMEOUT_S} or so"
        )
    return timeout


VISIBILITY_TIMEOUT_S = visibility_timeout_from_env(os.environ)

app = Celery("inference", broker=REDIS_URL)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,  # results go to the CPU queue's finalize task, not a backend
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    # Renews running deliveries and survives a Redis restart (inference/broker.py).
    broker_transport=TRANSPORT,
    # Keys of its own ("inference_unacked", ...): the CPU worker's tasks, under the default
    # names, are swept with the CPU app's own timeout, never this one.
    broker_transport_options=transport_options(VISIBILITY_TIMEOUT_S, key_prefix="inference"),
    task_routes={TaskName.FINALIZE_ANSWER.value: {"queue": Queue.CPU.value}},
    task_default_queue=Queue.INFERENCE.value,
)

_runtime: Any = None  # inference.runtime.Runtime, built once per process
_runtime_lock = threading.Lock()


def get_runtime() -> Any:
    """The process's model, engine and connections (built on first use)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            from inference.runtime import Runtime

            _runtime = Runtime.start(
                REDIS_URL,
                finalize=lambda result: app.send_task(
                    TaskName.FINALIZE_ANSWER.value, args=[result], queue=Queue.CPU.value
                ),
                # A request this worker cannot start in time goes back for an idle worker.
                hand_back=lambda request: app.send_task(
                    TaskName.GENERATE_ANSWER.value, args=[request], queue=Queue.INFERENCE.value
                ),
            )
        return _runtime


@signals.worker_init.connect
def _load_model_at_start(**_: Any) -> None:
    # Before the consumer starts: no task is taken until the model is loaded and warm.
    try:
        get_runtime()
    except EnvSettingError as error:
        # A setting it cannot run with (e.g. a model the OpenAI-compatible server does not
        # serve): stop, naming it. Celery would log the error, report "ready" and then fail
        # every request.
        raise SystemExit(f"inference worker not started: {error}") from None


@signals.worker_process_init.connect
def _load_model_in_child(**_: Any) -> None:
    # Prefork children (not recommended: one model copy per child) load their own copy.
    get_runtime()


@signals.worker_shutdown.connect
def _stop_engine(**_: Any) -> None:
    # The batching manager's generation thread is not a daemon: stop it, or the process
    # lingers after a warm shutdown.
    with _runtime_lock:
        if _runtime is not None:
            _runtime.close()


@app.task(
    name=TaskName.GENERATE_ANSWER.value,
    queue=Queue.INFERENCE.value,
    acks_late=True,
    reject_on_worker_lost=True,
)
def generate_answer(request: dict[str, Any]) -> str:
    try:
        return get_runtime().service.handle(request)
    except REDIS_UNAVAILABLE as error:
        # Redis went away mid-answer (a restart, a failover): the answer is not done, and a
        # failed task would be acknowledged and lost. Back on the queue with it; the delivery
        # stays in Redis if even that fails, and the sweep brings it back. A request that was
        # answered already is recognised then (answered-once key) and not answered again.
        logger.warning("message %s: Redis unavailable (%s); requeued", _message_id(request), error)
        raise Reject(error, requeue=True) from error


def _message_id(request: Any) -> str:
    return str(request.get("message_id")) if isinstance(request, dict) else "?"
