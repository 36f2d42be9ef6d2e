"""Less repetition: defaults, profiles and `count`, expanded at load time. Pure.

A domain is the merge of layers, farthest first: directory defaults (`_defaults.yaml`),
the file's `defaults`, the chosen profile, the domain's own fields. Every field remembers the
layer it came from, so a problem in an expanded domain points at the line that caused it,
whichever file that line is in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import Diagnostic
from ..model import Origin
from ..model.paths import has
from .formats import INDEX as _INDEX

DIRECTORY_DEFAULTS = ("_defaults.yaml", "_defaults.yml")

Path_ = tuple[Any, ...]
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class Source(Protocol):
    """A parsed spec file (specs.SpecFile): its path and the position of every node."""

    path: str

    def mark(self, path: Path_) -> tuple[int, int]: ...

    def is_bad(self, path: Path_) -> bool: ...


@dataclass(frozen=True)
class Layer:
    """A mapping of domain fields at `base` in one file."""

    file: Source
    base: Path_
    data: dict[str, Any]


@dataclass
class Located:
    """A merged domain: its fields, and for each field path the layer that set it."""

    data: dict[str, Any]
    origins: dict[Path_, Layer] = field(default_factory=dict)
    own: Layer | None = None

    def layer_of(self, path: Path_) -> Layer:
        key = tuple(path)
        while key not in self.origins and key:
            key = key[:-1]
        return self.origins.get(key) or self.own  # type: ignore[return-value]

    def where(self, path: Path_) -> tuple[Any, Path_]:
        """The file that set the field at `path` and its full path there: for messages, and for
        anything a field names relative to its own spec file."""
        layer = self.layer_of(path)
        if layer is self.own or has(layer.data, path):
            return layer.file, layer.base + tuple(path)
        return layer.file, layer.base

    def origin_of(self, path: Path_) -> Origin:
        f, full = self.where(path)
        return Origin(f.path, *f.mark(full))

    @property
    def origin(self) -> Origin:
        assert self.own is not None
        return Origin(self.own.file.path, *self.own.file.mark(self.own.base))

    def diag(self, path: Path_, message: str, resource: str | None = None) -> Diagnostic:
        f, full = self.where(path)
        line, col = f.mark(full)
        name = self.data.get("name") if resource is None else resource
        return Diagnostic(f.path, line, col, field_text(tuple(path)), message, name if isinstance(name, str) else "")


def field_text(path: Path_) -> str:
    """`('disks', 1, 'size')` -> `disks[1].size`; keys that are not plain words in brackets."""
    out = ""
    for p in path:
        if isinstance(p, int) or not _PLAIN_KEY.fullmatch(str(p)):
            out += f"[{p!r}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def merge_layers(stack: list[Layer]) -> Located:
    """Merge mappings field by field (later layers win); lists and values are replaced whole."""
    out = Located({}, {}, stack[-1] if stack else None)
    for layer in stack:
        _merge(out.data, layer.data, layer, (), out.origins)
    return out


def _merge(into: dict[str, Any], data: dict[str, Any], layer: Layer, where: Path_,
           origins: dict[Path_, Layer]) -> None:
    # A module-level function, not one nested in merge_layers: a nested function that calls
    # itself is a reference cycle, left for the cycle collector once per domain.
    for key, value in data.items():
        path = where + (key,)
        if key in into:  # set by an earlier layer: this one wins
            if isinstance(value, dict) and isinstance(into[key], dict):
                _merge(into[key], value, layer, path, origins)
                continue
            for stale in [p for p in origins if p[: len(path)] == path]:
                del origins[stale]
        into[key] = _copy(value)
        origins[path] = layer


def _copy(value: Any) -> Any:
    """A copy of parsed YAML data (dicts, lists and scalars): what deepcopy does, five times faster."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def has_index(text: str) -> bool:
    return bool(_INDEX.search(text))


def expand_index(located: Located, index: int) -> Located:
    """A copy of a merged domain with {index} (or {index:0N}, zero-padded) filled in everywhere."""
    return Located(_fill(located.data, index), dict(located.origins), located.own)


def _fill(value: Any, index: int) -> Any:
    if isinstance(value, str):
        return _INDEX.sub(lambda m: str(index).zfill(int(m.group(1) or 0)), value) if "{" in value else value
    if isinstance(value, list):
        return [_fill(v, index) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, index) for k, v in value.items()}
    return value
