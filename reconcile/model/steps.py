"""What the executor needs to carry out each kind of action: one typed payload per
operation, so that it dispatches on the type and never reads a dict key or an "op" string.

The planner builds them; `apply.runners` holds one runner per type. Immutable data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .desired import HostEntry
from .observed import PoolOwner, SourceStamp


@dataclass(frozen=True)
class Step:
    """Base of every payload."""


@dataclass(frozen=True)
class VolumeStep(Step):
    """A step that writes one volume of a pool (the executor keeps the pool from pool-wide
    operations meanwhile, and the volume from any other step)."""

    pool: str
    name: str


@dataclass(frozen=True)
class EnsurePool(Step):
    name: str
    path: str
    owner: PoolOwner | None = None  # the record a pool reconcile defines carries


@dataclass(frozen=True)
class RemovePool(Step):
    """Remove a pool this project made, once it holds no volume (checked again right before),
    with its directory when reconcile made it: after every domain and volume removal of the run."""

    name: str
    project: str


@dataclass(frozen=True)
class RemoveNetwork(Step):
    """Stop and undefine a network this project made, once no domain uses it (checked again
    right before): after every domain and volume removal of the run."""

    name: str
    project: str


@dataclass(frozen=True)
class EnsureNetwork(Step):
    name: str
    xml: str = field(repr=False)


@dataclass(frozen=True)
class UpdateNetworkHosts(Step):
    """Add and remove DHCP reservations (and their DNS names) of a network reconcile made,
    on the live network as well as its config: no restart, no guest loses its link."""

    name: str
    add: tuple[HostEntry, ...] = ()
    remove: tuple[HostEntry, ...] = ()


@dataclass(frozen=True)
class ImportImage(VolumeStep):
    """Import an image (or a new version of one: `name` is then NAME.VERSION) and record it
    beside as the image's current version, with the stamp of the source it came from."""

    source: str = field(default="", repr=False)  # may carry credentials: never shown
    format: str = "qcow2"
    sha256: str | None = None
    image: str = ""  # the image's own name (its record is NAME.reconcile.json)


@dataclass(frozen=True)
class RecordImage(VolumeStep):
    """Record `current` as the image's current version (`name` is the record volume): for a
    version imported by a run cut short before it wrote the record."""

    current: str = ""
    stamp: SourceStamp = field(default_factory=SourceStamp)


@dataclass(frozen=True)
class DeleteVersion(VolumeStep):
    """Delete an image version the refresh replaced, once nothing on the host, of any
    project, is built on it (checked again right before; else it is kept)."""

    path: str = ""
    record: str = ""  # the image's record, which stops listing the version once it is gone


@dataclass(frozen=True)
class OverlayBase:
    """The base an overlay is built on: its path, and its format when known (else its header says)."""

    path: str
    format: str | None


@dataclass(frozen=True)
class CreateVolume(VolumeStep):
    capacity: int | None = None  # None: an overlay as large as its base
    format: str = "qcow2"
    backing: OverlayBase | None = None


@dataclass(frozen=True)
class GrowVolume(VolumeStep):
    capacity: int = 0
    domain: str | None = None  # grown through the domain when it runs (qemu holds the image)
    target: str | None = None


@dataclass(frozen=True)
class RecreateVolume(VolumeStep):
    """A rebuild's disk: deleted and created again, a fresh overlay on its base (or empty)."""

    capacity: int | None = None
    format: str = "qcow2"
    backing: OverlayBase | None = None


@dataclass(frozen=True)
class WriteSeed(VolumeStep):
    files: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class DeleteVolume(VolumeStep):
    """Delete a volume reconcile created (with its domain, or a seed no longer used)."""


@dataclass(frozen=True)
class ReplaceVolume(VolumeStep):
    """Delete a disk's volume that its successor replaces (a format or backing change the
    spec allows): after the domain's redefinition, before the new volume is created."""


@dataclass(frozen=True)
class SetMemory:
    kib: int


@dataclass(frozen=True)
class SetVcpus:
    count: int


@dataclass(frozen=True)
class ChangeMedia:
    target: str
    path: str | None


LiveChange = SetMemory | SetVcpus | ChangeMedia


@dataclass(frozen=True)
class DefineDomain(Step):
    """Define a new domain, or redefine one (then apply `live` changes to it if it runs)."""

    xml: str = field(repr=False)
    autostart: bool = False
    live: tuple[LiveChange, ...] = ()


@dataclass(frozen=True)
class StartDomain(Step):
    pass


@dataclass(frozen=True)
class StopDomain(Step):
    stop_timeout: float | None = None  # None: the default


@dataclass(frozen=True)
class WriteRecord(Step):
    """Write reconcile's metadata record of a domain as given, and nothing else of it: a
    rebuild begun (before anything is reset, so that a run that dies half-way is finished
    by the next one), or done."""

    owner_xml: str = field(repr=False)


@dataclass(frozen=True)
class UndefineDomain(Step):
    uuid: str = ""
