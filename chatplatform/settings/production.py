"""Production profile: refuses to start with the public default secret key or with DEBUG on."""

from django.core.exceptions import ImproperlyConfigured

from chatplatform.settings.base import *  # noqa: F403
from chatplatform.settings.base import DEBUG, DEFAULT_SECRET_KEY, SECRET_KEY
from chatplatform.settings.env import get_from_env, str_to_bool

if SECRET_KEY == DEFAULT_SECRET_KEY or len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("SECRET_KEY must be set to a private value of 32+ characters")
if DEBUG:
    raise ImproperlyConfigured("DEBUG must be off in production (DEBUG=false)")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True

# A web process in production often has no CHAT_MODEL of its own (the Helm chart gives it to the
# inference pods only): "empty means the offline demo model" holds for `make run`, not here.
DEMO_MODEL = get_from_env("DEMO_MODEL", False, str_to_bool)
