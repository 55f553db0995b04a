"""The default profile: one box, embedded Redis, SQLite, offline models."""

from chatplatform.settings.base import *  # noqa: F403
from chatplatform.settings.env import get_from_env, str_to_bool

DEBUG = get_from_env("DEBUG", True, str_to_bool)
