"""Walking plain data (specs as read, essences) by a path of keys and list positions: the
one walker that every stage uses, so that "present", "absent" and "not that shape" mean
the same everywhere."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MISSING = object()


def lookup(data: Any, path: Iterable[Any], default: Any = MISSING) -> Any:
    """The value at `path`; `default` where any step is missing or of another shape."""
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return default
    return data


def has(data: Any, path: Iterable[Any]) -> bool:
    return lookup(data, path) is not MISSING
