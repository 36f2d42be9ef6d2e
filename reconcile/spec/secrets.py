"""Secrets in cloud-init files: `{env: NAME}` or `{file: PATH}` where a value would be, so a
password or a key lives in the environment or in a file outside the repository (such as
/run/secrets/...), never in a spec.

A reference is a mapping whose only key is `env` or `file`, with a string: the whole of
`user_data`, `meta_data` or `network_config`, or any value inside their mapping form. It is
resolved only when a seed is built or compared (`plan`, `apply`, `rebuild`); `validate` checks
its form and leaves a placeholder. A missing variable or file is a located problem naming
it, never its value. What it resolves to reaches the seed (which the guest reads, and which
therefore holds it) and, through the seed's hash, nothing else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import Diagnostic
from .layers import Located
from .source import Path_

MAX_SECRET = 1024 * 1024
KINDS = ("env", "file")


@dataclass(frozen=True)
class Reference:
    kind: str  # env | file
    name: str

    def __str__(self) -> str:
        return f"{{{self.kind}: {self.name}}}"


def reference(value: Any) -> Reference | None:
    """The reference `value` is, or None for a plain value."""
    if isinstance(value, dict) and len(value) == 1:
        (key, name), = value.items()
        if key in KINDS:
            return Reference(key, name) if isinstance(name, str) else Reference(key, "")
    return None


def holds_reference(value: Any) -> bool:
    """Whether `value` is, or holds somewhere inside it, a reference."""
    if reference(value) is not None:
        return True
    if isinstance(value, dict):
        return any(holds_reference(v) for v in value.values())
    if isinstance(value, list):
        return any(holds_reference(v) for v in value)
    return False


def resolve(item: Located, path: Path_, value: Any, resolving: bool, problems: list[Diagnostic]) -> Any:
    """`value` with every reference in it replaced by what it names (bytes for a whole
    file's reference, text inside a mapping), or by a placeholder when not `resolving`.
    A reference that cannot be had is reported and gives None."""
    ref = reference(value)
    if ref is not None:
        return _one(item, path, ref, resolving, problems)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            got = _inner(item, path + (k,), v, resolving, problems)
            if got is _MISSING:
                return None
            out[k] = got
        return out
    if isinstance(value, list):
        items = []
        for i, v in enumerate(value):
            got = _inner(item, path + (i,), v, resolving, problems)
            if got is _MISSING:
                return None
            items.append(got)
        return items
    return value


_MISSING = object()


def _inner(item: Located, path: Path_, value: Any, resolving: bool, problems: list[Diagnostic]) -> Any:
    """A value inside a mapping: a reference becomes text (a file's single line without its
    newline), so the mapping is written out as YAML with the secret as a string."""
    got = resolve(item, path, value, resolving, problems)
    if got is None and value is not None:
        return _MISSING
    if not isinstance(got, bytes):
        return got
    if got.endswith(b"\n") and got.count(b"\n") == 1:
        got = got[:-1]
    try:
        return got.decode()
    except UnicodeDecodeError:
        problems.append(item.diag(path, "the secret is not UTF-8 text; expected text inside a mapping (or give the "
                                        "whole file as the reference)"))
        return _MISSING


def _one(item: Located, path: Path_, ref: Reference, resolving: bool, problems: list[Diagnostic]) -> bytes | None:
    if not ref.name:
        problems.append(item.diag(path, f"{ref.kind}: expected the name of a{'n environment variable' if ref.kind == 'env' else ' file'} "
                                        "as a string"))
        return None
    if not resolving:
        return f"(secret from {ref})".encode()
    if ref.kind == "env":
        value = os.environ.get(ref.name)
        if value is None:
            problems.append(item.diag(path, f"the environment variable {ref.name} is not set; expected it to hold "
                                            "this secret (export it for the run, e.g. from the CI's secrets)"))
            return None
        return value.encode()
    source, _ = item.where(path)
    full = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(source.path)), ref.name))
    try:
        with open(full, "rb") as f:
            data = f.read(MAX_SECRET + 1)
    except OSError as exc:
        problems.append(item.diag(path, f"cannot read the secret file {full}: {exc.strerror or exc}; expected a "
                                        "readable file (absolute, or relative to the spec)"))
        return None
    if len(data) > MAX_SECRET:
        problems.append(item.diag(path, f"the secret file {full} is larger than 1 MiB; expected a small file"))
        return None
    return data

