"""The Django-free Celery worker that answers on the `inference` queue.

Start it (one model copy per process; threads share it):

    celery -A inference.worker worker -Q inference --pool threads -c 64

The thread pool must be at least the engine's batch size (`INFERENCE_MAX_RUNNING`, 32 by
default): each running request holds one task thread while it streams. Settings (env):
`REDIS_URL` (broker and channel layer), `CHAT_MODEL`, `QUANTIZATION`, `INFERENCE_MAX_RUNNING`,
`INFERENCE_VISIBILITY_TIMEOUT` (seconds before Redis redelivers an unacknowledged task; short
in tests, longer than the longest answer in production).

The model loads once at worker start (`worker_init`, before any task is consumed) and is
warmed up there, so the first customer does not pay for it.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from celery import Celery, signals

from inference.contracts import Queue, TaskName

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# Redis redelivers a task nobody acknowledged within this many seconds (acks_late: the ack
# comes when the answer is done). One hour in production; tests set a few seconds.
VISIBILITY_TIMEOUT_S = int(os.environ.get("INFERENCE_VISIBILITY_TIMEOUT", "3600"))

app = Celery("inference", broker=REDIS_URL)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,  # results go to the CPU queue's finalize task, not a backend
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        # Sweep for abandoned tasks often enough to notice them soon after the timeout.
        "unacked_restore_interval": max(1, min(10, VISIBILITY_TIMEOUT_S // 2)),
        "unacked_restore_throttle": 1,
    },
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
            )
        return _runtime


@signals.worker_init.connect
def _load_model_at_start(**_: Any) -> None:
    # Before the consumer starts: no task is taken until the model is loaded and warm.
    get_runtime()


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
    return get_runtime().service.handle(request)
