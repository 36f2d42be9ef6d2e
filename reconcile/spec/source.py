"""One spec file as read: plain data, and the position of every node, keyed by its path."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import Diagnostic
from .layers import field_text


Path_ = tuple[Any, ...]
TOP_KINDS = ("domains", "pools", "networks", "images")  # top-level lists whose items are named resources


@dataclass
class SpecFile:
    """One parsed file: plain data plus the position of every node, keyed by its path."""

    path: str
    data: Any
    marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)  # where each key itself is
    # paths already reported (a YAML trap, a schema error): nothing below is built
    bad: set[Path_] = field(default_factory=set)

    def mark(self, path: Iterable[Any]) -> tuple[int, int]:
        """Position of the node at `path`, or of its nearest ancestor that has one."""
        key = tuple(path)
        while key not in self.marks and key:
            key = key[:-1]
        return self.marks.get(key, (1, 1))

    def resource_name(self, path: Iterable[Any]) -> str:
        key = tuple(path)
        if len(key) >= 2 and key[0] in TOP_KINDS and isinstance(self.data, dict):
            items = self.data.get(key[0])
            if isinstance(items, list) and isinstance(key[1], int) and key[1] < len(items):
                item = items[key[1]]
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    return item["name"]
        return ""

    def diag(self, path: Iterable[Any], message: str, resource: str | None = None, at_key: bool = False
             ) -> Diagnostic:
        path = tuple(path)
        line, col = self.keys[path] if at_key and path in self.keys else self.mark(path)
        name = self.resource_name(path) if resource is None else resource
        return Diagnostic(self.path, line, col, field_path(path) if name else field_path(path, keep=True),
                          message, name)

    def is_bad(self, path: Path_) -> bool:
        """True when something at or below `path` has been reported already."""
        n = len(path)
        return any(p[:n] == path for p in self.bad)


def field_path(path: Path_, keep: bool = False) -> str:
    """`('domains', 0, 'disks', 1, 'size')` -> `disks[1].size` (the resource is named apart)."""
    parts = list(path)
    if not keep and len(parts) >= 2 and parts[0] in TOP_KINDS and isinstance(parts[1], int):
        parts = parts[2:]
    return field_text(tuple(parts))
