"""A plan and what running it gave: the verbs, the changes, the notes, the results.
Immutable data, no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .steps import Step


class ActionKind(str, enum.Enum):
    """The verbs of a plan; `glyph` is what a reviewer sees in front of each line."""

    CREATE = "create"
    UPDATE = "update"
    DESTROY = "destroy"
    START = "start"
    STOP = "stop"
    RESET = "reset"  # back to the first boot: fresh overlays and seed, same identity (rebuild)

    @property
    def glyph(self) -> str:
        return {"create": "+", "update": "~", "destroy": "-", "start": ">", "stop": "<", "reset": "^"}[self.value]


class ResourceKind(str, enum.Enum):
    POOL = "pool"
    NETWORK = "network"
    IMAGE = "image"
    VOLUME = "volume"
    DOMAIN = "domain"


class ChangeClass(str, enum.Enum):
    """How a change reaches a running domain; decided by the planner, shown per change."""

    LIVE = "live"            # applied to the running domain at once, and to its config
    NEXT_BOOT = "next-boot"  # config changed; the running domain picks it up when it next boots
    RESTART = "restart"      # config changed; needs a stop and a start to take effect
    RECREATE = "recreate"    # identity-level: the domain or a disk is replaced; refused unless allowed


@dataclass(frozen=True)
class Change:
    """One field that differs: `before` is what the host has, `after` what the spec wants.

    `drift` says the host moved away from what reconcile last applied while the spec stayed
    the same: someone changed it behind reconcile's back.
    """

    path: tuple[str | int, ...]  # ("disks", "vda", "size"); `shown` is how people read it
    before: Any
    after: Any
    klass: ChangeClass | None = None
    drift: bool = False

    @property
    def shown(self) -> str:
        return show_path(self.path)


# Fields keyed by a name, which is shown in brackets: disks[vda].size, volumes[pool/name].keep.
KEYED = ("disks", "cdroms", "volumes", "hosts")


def show_path(path: tuple[str | int, ...]) -> str:
    """A change's path as output shows it: `disks[vda].format`, `cloud_init.instance_id`."""
    out = str(path[0])
    for i, part in enumerate(path[1:], 1):
        out += f"[{part}]" if i == 1 and path[0] in KEYED else f".{part}"
    return out


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    resource: ResourceKind
    name: str
    reason: str
    changes: tuple[Change, ...] = ()
    depends_on: tuple[str, ...] = ()
    # What the executor needs to act: one typed step per operation (see `steps`).
    payload: Step | None = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> str:
        return f"{self.resource.value}:{self.name}:{self.kind.value}"


class NoteKind(str, enum.Enum):
    """What a note is about; output chooses by it what to show (never by the note's words)."""

    CONVERGED = "converged"  # nothing to do: matches, exists, absent as asked (shown with -v)
    REFUSED = "refused"      # the specs ask for something reconcile will not do (exit 1)
    UNMANAGED = "unmanaged"  # exists, not created by reconcile: left alone (--adopt takes it over)
    ORPHANED = "orphaned"    # managed by the project, no spec mentions it (--prune removes it)
    DIFFERS = "differs"      # exists but differs from its spec, and is never changed (a network)
    WARNING = "warning"      # used as it is, but the user should know (a pool at another path)
    UNMODELED = "unmodeled"  # a domain's devices that no spec field describes: kept as they are

    @property
    def always_shown(self) -> bool:
        return self is not NoteKind.CONVERGED

    @property
    def checked(self) -> bool:
        """Whether the note is the verdict on a resource that was checked (and counts as one)."""
        return self not in (NoteKind.REFUSED, NoteKind.UNMANAGED, NoteKind.UNMODELED)


@dataclass(frozen=True)
class Note:
    """Something the plan reports without acting: a converged resource, an unmanaged one."""

    resource: ResourceKind
    name: str
    message: str
    kind: NoteKind = NoteKind.CONVERGED
    devices: tuple[str, ...] = ()  # kind unmodeled: each device, as XML on one line

    @property
    def refused(self) -> bool:
        return self.kind is NoteKind.REFUSED


@dataclass(frozen=True)
class Pending:
    """A running domain whose config is ahead of what it runs: `before` live, `after` config."""

    name: str
    reason: str
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True)
class Plan:
    project: str
    uri: str
    actions: tuple[Action, ...] = ()
    notes: tuple[Note, ...] = ()
    # Changes already in a running domain's config that wait for its restart (on_change: defer).
    pending: tuple[Pending, ...] = ()

    @property
    def drift(self) -> bool:
        return any(c.drift for a in self.actions for c in a.changes)

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
    started: float = 0.0   # seconds since the epoch
    finished: float = 0.0
    # A stable word for machines: for a stop "graceful", "forced" or "already stopped".
    outcome: str = ""
    error: str = ""  # the kind of error of a failed action ("conflict", "host unavailable", ...)
    attempts: int = 1  # more than one when the host called a failure temporary and it was tried again
    connection_lost: bool = False  # it failed because the connection to libvirtd broke

    @property
    def duration(self) -> float:
        return max(0.0, self.finished - self.started)


@dataclass(frozen=True)
class ApplyResult:
    plan: Plan
    results: tuple[ActionResult, ...]
    wall_time: float = 0.0
    connection_lost: bool = False  # the host went away mid-apply; the rest was not attempted

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        return not self.plan.refusals and all(r.status in (Status.APPLIED, Status.UNCHANGED) for r in self.results)
