"""Read settings from the environment through one helper that fails clearly.

Every setting the platform reads from the environment goes through `get_from_env`, so a bad
value stops the process at start with a message naming the variable, instead of surfacing
later as a confusing error deep inside a request.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TypeVar

from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")

_TRUE_WORDS = {"1", "true", "yes", "on"}
_FALSE_WORDS = {"0", "false", "no", "off", ""}


def str_to_bool(value: str) -> bool:
    word = value.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE_WORDS | _FALSE_WORDS)}, got {value!r}")


def str_to_list(value: str) -> list[str]:
    """Comma-separated list; blanks dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


def positive_float(value: str) -> float:
    """A finite number above 0 (a cost or a rate: 0, negative, nan or inf is a mistake)."""
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"expected a finite number above 0, got {value!r}")
    return number


def positive_int(value: str) -> int:
    """A whole number above 0 (a size or a count limit: 0 or less would refuse everything)."""
    number = int(value)
    if number <= 0:
        raise ValueError(f"expected a whole number above 0, got {value!r}")
    return number


def at_least(minimum: float, why: str) -> Callable[[str], float]:
    """A cast to a finite number no smaller than `minimum` (the reason goes in the error)."""

    def cast(value: str) -> float:
        number = float(value)
        if not math.isfinite(number) or number < minimum:
            raise ValueError(f"expected at least {minimum:g} ({why}), got {value!r}")
        return number

    return cast


def one_of(*choices: str) -> Callable[[str], str]:
    """A cast that accepts only the given words (case-insensitive)."""

    def cast(value: str) -> str:
        word = value.strip().lower()
        if word not in choices:
            raise ValueError(f"expected one of {list(choices)}, got {value!r}")
        return word

    return cast


def get_from_env(key: str, default: T, type_cast: Callable[[str], T] | None = None) -> T:
    """The environment's value for `key` cast with `type_cast`, or `default` when unset.

    Raises ImproperlyConfigured naming the variable when the value cannot be cast.
    """
    raw = os.environ.get(key)
    if raw is None:
        return default
    if type_cast is None:
        return raw  # type: ignore[return-value]
    try:
        return type_cast(raw)
    except (ValueError, TypeError) as error:
        raise ImproperlyConfigured(f"Setting {key}={raw!r} is invalid: {error}") from error
