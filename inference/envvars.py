"""Read numeric worker settings from the environment, failing with the variable's name.

The inference worker is Django-free, so it cannot use `chatplatform/settings/env.py`; this is
its small counterpart. A bad value stops the worker at start with a message naming the
variable, instead of a bare `int()` error or a value silently clamped to something else.
An unset or blank variable means the default (compose passes unset variables as blanks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping


class EnvSettingError(ValueError):
    """An environment variable holds a value the worker cannot run with; names the variable."""


def _raw(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    return raw.strip()


def positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    """`env[name]` as an integer of at least 1, or `default` when unset or blank."""
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise EnvSettingError(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise EnvSettingError(f"{name}={raw!r} must be at least 1")
    return value


def positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    """`env[name]` as a finite number above 0, or `default` when unset or blank."""
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise EnvSettingError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise EnvSettingError(f"{name}={raw!r} must be a finite number above 0")
    return value
