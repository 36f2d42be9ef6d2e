"""Walking plain spec data by field path: one home for the walkers the loader uses."""

from __future__ import annotations

from typing import Any

from .source import Path_


def list_of(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def at(data: Any, path: Path_) -> Any:
    for p in path:
        data = data[p]
    return data


def values_at(data: Any, path: tuple[str, ...], default: str | None) -> list[tuple[Path_, str]]:
    """Every value at `path` ("*" for each list item), with the default where it is left out."""
    found: list[tuple[Path_, str]] = []
    walk(data, path, (), default, found)
    return found


def walk(node: Any, rest: tuple[str, ...], where: Path_, default: str | None, found: list[tuple[Path_, str]]) -> None:
    # not nested in values_at: a nested function that calls itself is a reference cycle
    if not rest:
        if isinstance(node, str):
            found.append((where, node))
        return
    head, tail = rest[0], rest[1:]
    if head == "*":
        for i, child in enumerate(list_of(node)):
            walk(child, tail, where + (i,), default, found)
    elif isinstance(node, dict):
        if head in node:
            walk(node[head], tail, where + (head,), default, found)
        elif not tail and default is not None:
            found.append((where, default))
