"""A domain's cloud-init seed composed from its spec: user-data, meta-data and network-config
as files, given inline (a mapping or a block of text) or as a file beside the spec.

The instance-id derives from the content (unless meta_data sets one), so changing user-data
gives a new instance-id and cloud-init runs again at the next boot.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

from ..errors import Diagnostic
from ..model import Seed, protected_digest, seed_whole_digest
from . import secrets
from .layers import Located
from .schema import _kind
from .source import Path_

MAX_FILE = 4 * 1024 * 1024  # cloud-init seeds are meant to be small
FILE_OF = {"user_data": "user-data", "meta_data": "meta-data", "network_config": "network-config"}


def compose_seed(item: Located, domain: str, ci: dict[str, Any], pool: str, volume: str,
                 problems: list[Diagnostic], resolve_secrets: bool = True) -> Seed | None:
    """The seed of `domain`, or None (with the problems said) when a file or a secret
    cannot be had. Without `resolve_secrets` (validate), secrets are placeholders."""
    before = len(problems)
    # (validate resolves nothing: its placeholders need no slow hash)
    secret = {FILE_OF[k] for k, v in ci.items() if resolve_secrets and k in FILE_OF and secrets.holds_reference(v)}
    ci = {k: (secrets.resolve(item, ("cloud_init", k), v, resolve_secrets, problems) if k != "pool" else v)
          for k, v in ci.items()}
    if len(problems) > before:
        return None
    contents: dict[str, bytes] = {}
    for key, name, header in (("user_data", "user-data", "#cloud-config\n"),
                              ("network_config", "network-config", "")):
        if key not in ci:
            continue
        data = _content(item, ("cloud_init", key), ci[key], header, problems)
        if data is None:
            return None
        contents[name] = data
    meta = _meta_data(item, ci, problems) if "meta_data" in ci else {}
    if meta is None:
        return None
    # The instance-id derives from the content; what holds a secret enters by its protected
    # digest, since the instance-id is shown, recorded in libvirt's metadata and in the guest.
    meta_given = json.dumps(meta, sort_keys=True, default=str).encode()
    protected = {name: protected_digest(data) for name, data in contents.items() if name in secret}
    digest = hashlib.sha256()
    for name in ("user-data", "network-config"):
        part = protected[name].encode() if name in protected else contents.get(name, b"")
        digest.update(name.encode() + b"\0" + part + b"\0")
    digest.update(protected_digest(meta_given).encode() if "meta-data" in secret else meta_given)
    instance_id = str(meta.get("instance-id") or f"{domain}-{digest.hexdigest()[:12]}")
    meta = {"instance-id": instance_id, "local-hostname": meta.get("local-hostname", domain),
            **{k: v for k, v in meta.items() if k not in ("instance-id", "local-hostname")}}
    contents["meta-data"] = yaml.safe_dump(meta, sort_keys=False, default_flow_style=False).encode()
    rest = {k: v for k, v in meta.items() if k != "instance-id"}
    tail = yaml.safe_dump(rest, sort_keys=False, default_flow_style=False).encode()
    if "user-data" not in contents:  # NoCloud wants the file, even empty
        contents["user-data"] = b"#cloud-config\n"
    files = tuple((name, contents[name]) for name in ("meta-data", "user-data", "network-config") if name in contents)
    if "meta-data" in secret:
        protected["meta-data"] = protected_digest(contents["meta-data"])
    return Seed(pool=pool, volume=volume, files=files, digest=seed_whole_digest(files, protected),
                instance_id=instance_id, meta_tail=tail, protected=protected)


def _content(item: Located, path: Path_, value: Any, header: str, problems: list[Diagnostic]) -> bytes | None:
    if isinstance(value, bytes):  # a whole file from a secret: as it is
        return value
    if isinstance(value, dict):
        return (header + yaml.safe_dump(value, sort_keys=False, default_flow_style=False)).encode()
    if "\n" in value:  # a block of text (`|`): the file's content as it is
        return value.encode()
    return _read_beside(item, path, value, problems)


def _meta_data(item: Located, ci: dict[str, Any], problems: list[Diagnostic]) -> dict[str, Any] | None:
    value = ci["meta_data"]
    path = ("cloud_init", "meta_data")
    if isinstance(value, dict):
        return dict(value)
    secret = isinstance(value, bytes)
    data = value if secret else value.encode() if "\n" in value else _read_beside(item, path, value, problems)
    if data is None:
        return None
    try:
        meta = yaml.safe_load(data) or {}
    except yaml.YAMLError as exc:  # a secret's own words are never shown, not even in an error
        problems.append(item.diag(path, "the secret is not valid YAML; expected a YAML mapping" if secret
                                  else f"not valid YAML ({exc}); expected a YAML mapping"))
        return None
    if not isinstance(meta, dict):
        problems.append(item.diag(path, f"holds {_kind(meta)}; expected a YAML mapping"))
        return None
    return meta


def _read_beside(item: Located, path: Path_, value: str, problems: list[Diagnostic]) -> bytes | None:
    """A file a spec names, relative to the file that set the field."""
    source, _ = item.where(path)
    full = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(source.path)), value))
    try:
        data = Path(full).read_bytes()
    except OSError as exc:
        problems.append(item.diag(path, f"cannot read {full}: {exc.strerror or exc}; expected a file "
                                        "beside the spec, a block of text or a mapping"))
        return None
    if len(data) > MAX_FILE:
        problems.append(item.diag(path, f"{full} is larger than 4 MiB; expected a small file "
                                        "(cloud-init seeds are meant to be small)"))
        return None
    return data
