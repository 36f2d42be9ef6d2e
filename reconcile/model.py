"""The shapes that flow through reconcile: desired state, observed state, plans, results.

Specs load into `Desired`; the live host is read into `Observed`; both describe a domain by
the same "essence" (a plain dict of the fields a spec can express), so that planning is a
comparison of like with like. Everything here is immutable data with no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class State(str, enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    ABSENT = "absent"


DEFAULT_STOP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Origin:
    """Where a resource was declared, for messages and for the ownership record."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}" if self.line else self.file


@dataclass(frozen=True)
class Disk:
    """A disk attached to a domain: a volume in a pool, created by reconcile if missing."""

    target: str
    pool: str
    volume: str
    size: int  # bytes
    format: str = "qcow2"
    bus: str = "virtio"
    keep: bool = False

    def essence(self) -> dict[str, Any]:
        return {"pool": self.pool, "volume": self.volume, "format": self.format, "bus": self.bus}


@dataclass(frozen=True)
class Cdrom:
    target: str
    path: str
    bus: str = "sata"

    def essence(self) -> dict[str, Any]:
        return {"path": self.path, "bus": self.bus}


@dataclass(frozen=True)
class Graphics:
    type: str = "vnc"
    listen: str | None = None
    port: int | None = None  # None: libvirt picks a free port (autoport)

    def essence(self) -> dict[str, Any]:
        out = {"type": self.type, "port": self.port if self.port is not None else "auto"}
        if self.listen is not None:  # left out: libvirt's default listen address is not managed
            out["listen"] = self.listen
        return out


@dataclass(frozen=True)
class DomainSpec:
    name: str
    memory: int  # KiB, as libvirt counts
    vcpus: int
    origin: Origin
    type: str = "kvm"
    arch: str = "x86_64"
    machine: str | None = None
    current_memory: int | None = None  # KiB; None means equal to memory
    boot: tuple[str, ...] | None = None
    disks: tuple[Disk, ...] = ()
    cdroms: tuple[Cdrom, ...] = ()
    graphics: Graphics | None = None
    autostart: bool = False
    state: State = State.RUNNING
    stop_timeout: float = DEFAULT_STOP_TIMEOUT

    def essence(self) -> dict[str, Any]:
        """The managed fields, in the same shape `domxml.essence_of` reads from live XML.

        A field left as None is not managed and is left out, so libvirt's value for it can
        never show up as a difference.
        """
        out: dict[str, Any] = {
            "type": self.type,
            "arch": self.arch,
            "machine": self.machine,
            "memory": self.memory,
            "current_memory": self.current_memory if self.current_memory is not None else self.memory,
            "vcpus": self.vcpus,
            "boot": list(self.boot) if self.boot is not None else None,
            "disks": {d.target: d.essence() for d in self.disks},
            "cdroms": {c.target: c.essence() for c in self.cdroms},
            "graphics": self.graphics.essence() if self.graphics else {},
            "autostart": self.autostart,
        }
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class PoolSpec:
    name: str
    path: str
    origin: Origin


@dataclass(frozen=True)
class Desired:
    project: str
    domains: tuple[DomainSpec, ...] = ()
    pools: tuple[PoolSpec, ...] = ()
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class VolumeRef:
    pool: str
    name: str
    keep: bool = False


@dataclass(frozen=True)
class Ownership:
    """What reconcile's metadata element in a domain says about it."""

    project: str
    spec_file: str = ""
    spec_hash: str = ""
    volumes: tuple[VolumeRef, ...] = ()


@dataclass(frozen=True)
class ObservedDomain:
    name: str
    uuid: str
    running: bool
    essence: dict[str, Any]
    ownership: Ownership | None
    xml: str = field(default="", repr=False, compare=False)

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


@dataclass(frozen=True)
class ObservedPool:
    name: str
    active: bool
    path: str


@dataclass(frozen=True)
class Observed:
    uri: str
    domains: dict[str, ObservedDomain] = field(default_factory=dict)
    pools: dict[str, ObservedPool] = field(default_factory=dict)
    volumes: dict[tuple[str, str], ObservedVolume] = field(default_factory=dict)
    # Machine type aliases the hypervisor resolves, e.g. ("x86_64", "pc") -> "pc-i440fx-7.2".
    machine_aliases: dict[tuple[str, str], str] = field(default_factory=dict)


class ActionKind(str, enum.Enum):
    """The verbs of a plan; `glyph` is what a reviewer sees in front of each line."""

    CREATE = "create"
    UPDATE = "update"
    DESTROY = "destroy"
    START = "start"
    STOP = "stop"

    @property
    def glyph(self) -> str:
        return {"create": "+", "update": "~", "destroy": "-", "start": ">", "stop": "<"}[self.value]


class ResourceKind(str, enum.Enum):
    POOL = "pool"
    VOLUME = "volume"
    DOMAIN = "domain"


@dataclass(frozen=True)
class Change:
    """One field that differs: `before` is what the host has, `after` what the spec wants."""

    path: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    resource: ResourceKind
    name: str
    reason: str
    changes: tuple[Change, ...] = ()
    depends_on: tuple[str, ...] = ()
    # What the executor needs to act: a DomainSpec, PoolSpec, volume parameters, ...
    payload: Any = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> str:
        return f"{self.resource.value}:{self.name}:{self.kind.value}"


@dataclass(frozen=True)
class Note:
    """Something the plan reports without acting: a converged resource, an unmanaged one."""

    resource: ResourceKind
    name: str
    message: str
    refused: bool = False  # True: the specs ask for something reconcile will not do


@dataclass(frozen=True)
class Plan:
    project: str
    uri: str
    actions: tuple[Action, ...] = ()
    notes: tuple[Note, ...] = ()

    @property
    def refusals(self) -> tuple[Note, ...]:
        return tuple(n for n in self.notes if n.refused)

    @property
    def empty(self) -> bool:
        return not self.actions


class Status(str, enum.Enum):
    APPLIED = "applied"      # the action changed the host
    UNCHANGED = "unchanged"  # re-checked right before acting: already converged
    FAILED = "failed"
    SKIPPED = "skipped"      # a dependency failed or was skipped


@dataclass(frozen=True)
class ActionResult:
    action: Action
    status: Status
    message: str = ""
    started: float = 0.0
    finished: float = 0.0

    @property
    def duration(self) -> float:
        return max(0.0, self.finished - self.started)


@dataclass(frozen=True)
class ApplyResult:
    plan: Plan
    results: tuple[ActionResult, ...]
    wall_time: float = 0.0

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        return not self.plan.refusals and all(r.status in (Status.APPLIED, Status.UNCHANGED) for r in self.results)
