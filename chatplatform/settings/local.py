"""The default profile: one box, embedded Redis, SQLite, offline models."""

from chatplatform.settings.base import *  # noqa: F403
from chatplatform.settings.env import get_from_env, str_to_bool

DEBUG = get_from_env("DEBUG", True, str_to_bool)

# Serve static files straight from the apps' folders in a local run (no collectstatic step).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
