"""Reading one field of a raw Campaign spec: type and bounds checked, the bad field named.

The parser in `aftershock.model` is built from these; they live apart so the model stays a
module a person reads in one sitting. Rule: no I/O here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, TypeVar

from aftershock.errors import SpecError

# The names keep their leading underscore: they are the model's private parsing kit.
__all__ = ["_bool", "_enum", "_get", "_int", "_mapping", "_number"]


def _get(raw: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in raw or raw[key] is None:
        raise SpecError(path, "is required")
    return raw[key]


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(path, "must be an object")
    return value


def _int(value: Any, path: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(path, "must be an integer")
    if not minimum <= value <= maximum:
        raise SpecError(path, f"must be between {minimum} and {maximum}, got {value}")
    return value


def _number(value: Any, path: str, *, minimum: float, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(path, "must be a number")
    if not minimum <= value <= maximum:
        raise SpecError(path, f"must be between {minimum:g} and {maximum:g}, got {value}")
    return float(value)


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(path, "must be true or false")
    return value


def _name(value: Any, path: str) -> str:
    """A name from a vocabulary kept elsewhere (subject kinds, roles: the subject registry)."""
    if not isinstance(value, str) or not value:
        raise SpecError(path, "must be a non-empty string")
    return value


_E = TypeVar("_E", bound=enum.StrEnum)


def _enum(cls: type[_E], value: Any, path: str) -> _E:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls if m.value)
        raise SpecError(path, f"must be one of {allowed}, got {value!r}") from None
