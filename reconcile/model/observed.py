"""What a libvirt host has, read by `host` and translated into the shapes specs load into,
plus reconcile's ownership record that each managed domain carries. Immutable data, no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .desired import HostEntry, short_digest


@dataclass(frozen=True)
class ImageHead:
    """An image as its header describes it (see `codec.imagehead`). `virtual_size` is None
    for raw (the file's size)."""

    format: str  # qcow2 | raw | unfinished
    virtual_size: int | None = None
    backing: str | None = None
    backing_format: str | None = None  # None: the overlay does not say (qemu would probe it)

    @property
    def unfinished(self) -> bool:
        return self.format == "unfinished"


@dataclass(frozen=True)
class VolumeRef:
    pool: str
    name: str
    keep: bool = False


@dataclass(frozen=True)
class ResetMark:
    """A rebuild under way, recorded in the domain before anything is reset: the generation
    it brings the domain to, and whether the domain is to be started after it."""

    generation: int
    start: bool


@dataclass(frozen=True)
class Ownership:
    """What reconcile's metadata element in a domain says about it."""

    project: str
    spec_file: str = ""
    spec_hash: str = ""
    volumes: tuple[VolumeRef, ...] = ()
    stop_timeout: float | None = None  # the spec's, so a prune (the spec gone) stops it as the spec said
    # The essence (plus desired state) reconcile last applied: a field where the host differs
    # from it, while the spec still asks for it, was changed behind reconcile's back (drift).
    applied: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    rebuilds: int = 0  # rebuilds finished: each gives the seed a new instance-id
    reset: ResetMark | None = None  # a rebuild begun and not finished


@dataclass(frozen=True)
class ObservedDomain:
    name: str
    uuid: str
    running: bool
    essence: dict[str, Any]  # of the persistent config
    ownership: Ownership | None
    xml: str = field(default="", repr=False, compare=False)
    # Of the running domain (None when shut off): differs from `essence` while a change waits for a restart.
    live_essence: dict[str, Any] | None = None

    @property
    def managed(self) -> bool:
        return self.ownership is not None


@dataclass(frozen=True)
class ObservedVolume:
    pool: str
    name: str
    capacity: int
    allocation: int
    format: str
    path: str
    backing: str | None = None  # path of the backing file of an overlay, as libvirt records it
    # What the content's first bytes say (images, overlays and their bases only; None: not
    # read). libvirt's record may lag what was just written into a volume; this does not.
    head: ImageHead | None = None

    @property
    def content_format(self) -> str | None:
        return self.head.format if self.head is not None else None


@dataclass(frozen=True)
class ObservedSeed:
    """What a seed volume holds: its files, or None when it is not a readable cidata ISO."""

    files: dict[str, bytes] | None = field(repr=False)
    instance_id: str | None = None

    def file_digests(self) -> dict[str, str]:
        return {name: short_digest(data) for name, data in (self.files or {}).items()}


@dataclass(frozen=True)
class ObservedPool:
    name: str
    active: bool
    path: str


@dataclass(frozen=True)
class ObservedNetwork:
    name: str
    active: bool
    autostart: bool
    essence: dict[str, Any]
    owner_project: str | None = None
    hosts: tuple[HostEntry, ...] = ()  # its DHCP host reservations, with their DNS names


def volume_paths(volumes: Mapping[tuple[str, str], ObservedVolume]) -> dict[str, tuple[str, str]]:
    """Which pool volume each file is: how a disk given by its file is known as a volume."""
    return {v.path: (v.pool, v.name) for v in volumes.values() if v.path}


@dataclass(frozen=True)
class Observed:
    uri: str
    domains: dict[str, ObservedDomain] = field(default_factory=dict)
    pools: dict[str, ObservedPool] = field(default_factory=dict)
    networks: dict[str, ObservedNetwork] = field(default_factory=dict)
    volumes: dict[tuple[str, str], ObservedVolume] = field(default_factory=dict)
    seeds: dict[tuple[str, str], ObservedSeed] = field(default_factory=dict)
    # The domains (of any project, or unmanaged) that have each observed volume as a disk.
    attached: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    # Machine type aliases the hypervisor resolves, e.g. ("x86_64", "pc") -> "pc-i440fx-7.2".
    machine_aliases: dict[tuple[str, str], str] = field(default_factory=dict)

    @functools.cached_property
    def by_path(self) -> dict[str, tuple[str, str]]:
        return volume_paths(self.volumes)
