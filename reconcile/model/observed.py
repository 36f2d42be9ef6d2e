"""What a libvirt host has, read by `host` and translated into the shapes specs load into,
plus reconcile's ownership record that each managed domain carries. Immutable data, no I/O.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .desired import HostEntry, protected_digest


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
class UnmodeledDevice:
    """A device of a domain that no spec field describes (a <sound>, an <rng>, a second serial
    port): an update keeps it as it is, export names it in a comment, the plan in a note."""

    tag: str  # its element's name: sound, rng, hostdev, ...
    xml: str  # the element on one line, without the addresses and aliases libvirt gives it


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
    unmodeled: tuple[UnmodeledDevice, ...] = ()  # of the persistent config, in document order

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
        """Each file by its protected digest: what a seed on the host holds may be a secret
        (a plan compares it through the spec's seed, `Seed.digests_of`, instead)."""
        return {name: protected_digest(data) for name, data in (self.files or {}).items()}


@dataclass(frozen=True)
class SourceStamp:
    """What identifies one version of an image's source without reading it all: a file's
    size and modification time (and the content hash read once for them), a URL's ETag or
    Last-Modified, or the sha256 the spec gives. Recorded beside the image at each import."""

    size: int | None = None
    mtime_ns: int | None = None
    sha256: str | None = None  # of the content
    etag: str | None = None
    last_modified: str | None = None

    def same_source(self, other: SourceStamp) -> bool:
        """Whether both name the same content, by the strongest mark both have."""
        if self.sha256 and other.sha256:
            return self.sha256 == other.sha256
        if self.etag and other.etag:
            return self.etag == other.etag
        if self.last_modified and other.last_modified:
            return self.last_modified == other.last_modified and self.size == other.size
        return False

    @property
    def version(self) -> str:
        """Twelve hex digits naming this version: of the content hash when known, else of
        what the server says of it."""
        if self.sha256:
            return self.sha256[:12]
        mark = f"{self.etag or ''}|{self.last_modified or ''}|{self.size if self.size is not None else ''}"
        return hashlib.sha256(mark.encode()).hexdigest()[:12]


_VERSION = re.compile(r"(.+)\.[0-9a-f]{12}")


def version_volume(image: str, version: str) -> str:
    """The volume of an image's version: NAME.VERSION (twelve hex digits)."""
    return f"{image}.{version}"


def is_version(image: str, volume: str) -> bool:
    """Whether `volume` is the image's own volume or one of its versions."""
    if volume == image:
        return True
    found = _VERSION.fullmatch(volume)
    return found is not None and found.group(1) == image


@dataclass(frozen=True)
class ImageRecord:
    """Reconcile's record beside an image in its pool: which volume is its current version,
    the stamp of the source that version was imported from, and every version reconcile
    imported that is still there (only those are ever deleted: a volume that merely has a
    version's name, such as a dated copy made by hand, is never reconcile's to remove)."""

    current: str
    stamp: SourceStamp
    versions: tuple[str, ...] = ()


@dataclass(frozen=True)
class PoolOwner:
    """reconcile's record in a pool it created (see `codec.storage`): the project, the spec
    file that declared the pool, and whether reconcile made its directory (pool-build found
    none), so that removing the pool removes that directory too, and never one that was
    there before."""

    project: str
    spec_file: str = ""
    made_directory: bool = False


@dataclass(frozen=True)
class ObservedPool:
    name: str
    active: bool
    path: str
    owner: PoolOwner | None = None  # None: no record of reconcile's (there before, or made by hand)
    # Every volume the pool holds, by name, when they were listed (an active pool of interest
    # or one of the project's); None when not known.
    volumes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ObservedNetwork:
    name: str
    active: bool
    autostart: bool
    essence: dict[str, Any]
    owner_project: str | None = None
    hosts: tuple[HostEntry, ...] = ()  # its DHCP host reservations, with their DNS names
    owner_spec: str = ""  # the spec file its ownership record names


class TeardownOutcome(str, enum.Enum):
    """What a host found when asked to remove a pool or network reconcile made."""

    REMOVED = "removed"
    GONE = "gone"          # not there (any more): nothing to do
    NOT_OURS = "not ours"  # its record is not this project's (any more): left alone
    IN_USE = "in use"      # it holds a volume, or a domain uses it: left alone


@dataclass(frozen=True)
class Teardown:
    outcome: TeardownOutcome
    users: tuple[str, ...] = ()  # IN_USE: the volumes it holds, or the domains that use it
    owner: str | None = None     # NOT_OURS: the project its record names (None: it has none)
    directory_removed: bool = False  # a pool's directory went with it


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
    # The domains (of any project, or unmanaged) with an interface on each observed network
    # (by its name, or on its bridge), as their persistent definitions say.
    network_users: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Machine type aliases the hypervisor resolves, e.g. ("x86_64", "pc") -> "pc-i440fx-7.2".
    machine_aliases: dict[tuple[str, str], str] = field(default_factory=dict)
    # The record of each declared image that has one, by (pool, image name).
    images: dict[tuple[str, str], ImageRecord] = field(default_factory=dict)

    @functools.cached_property
    def by_path(self) -> dict[str, tuple[str, str]]:
        return volume_paths(self.volumes)

    @functools.cached_property
    def versions(self) -> dict[tuple[str, str], tuple[ObservedVolume, ...]]:
        """The versions of each image that has a record, by (pool, image name), its own
        volume included. Once per plan: looked up per disk it would be quadratic."""
        if not self.images:
            return {}
        out: dict[tuple[str, str], list[ObservedVolume]] = {}
        for (pool, name), vol in self.volumes.items():
            found = _VERSION.fullmatch(name)
            for image in (name, found.group(1) if found else None):
                if image is not None and (pool, image) in self.images:
                    out.setdefault((pool, image), []).append(vol)
        return {k: tuple(v) for k, v in out.items()}
