"""What every planning step is given and what it returns: a small frozen context instead
of a long list of parameters, and its findings as a value instead of lists passed in."""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..model import Action, Desired, Note, Observed, Pending, ResourceKind


@dataclass(frozen=True)
class Options:
    """What the command line allows beyond the specs."""

    prune: bool = False
    restart: bool = False         # restart running domains whose changes need it, whatever on_change says
    adopt: bool = False           # take over existing unmanaged domains that specs name
    allow_recreate: bool = False  # allow identity-level changes (type, arch, disk format)
    prune_all: bool = False       # with prune: also domains from files outside the run, even every one
    destroying: bool = False      # `reconcile destroy`: every domain is absent because the command says so
    # Many hosts: the domains of the specs that are on another host now (name -> that host),
    # and the domains of this host whose spec moved them elsewhere.
    elsewhere: Mapping[str, str] = field(default_factory=dict)
    moving_out: Mapping[str, str] = field(default_factory=dict)  # name -> the host it moves to
    # Moves this run cannot make (name -> why): domains of this host whose new host is not
    # changed by this run (`held`: they stay here), and domains placed here that sit on a
    # host this run does not change (`stuck`: they are not created here).
    held: Mapping[str, str] = field(default_factory=dict)
    stuck: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Waits:
    """For each pool, network and image, the action that brings it (what an action needing
    it depends on), or that it is refused (then what needs it is refused too)."""

    made: Mapping[tuple[ResourceKind, str], str] = field(default_factory=dict)
    refused: frozenset[tuple[ResourceKind, str]] = frozenset()

    def on(self, kind: ResourceKind, *names: str) -> tuple[str, ...]:
        """The ids to wait for before using these resources (none for what already exists)."""
        return tuple(sorted({self.made[(kind, n)] for n in names if (kind, n) in self.made}))

    def is_refused(self, kind: ResourceKind, name: str) -> bool:
        return (kind, name) in self.refused

    def __or__(self, other: Waits) -> Waits:
        return Waits({**self.made, **other.made}, self.refused | other.refused)


@dataclass(frozen=True)
class Planned:
    """What a step found: actions to take, notes on what it will not or need not do, and
    running domains' changes that wait for a restart. Steps' findings add up with `+`."""

    actions: tuple[Action, ...] = ()
    notes: tuple[Note, ...] = ()
    pending: tuple[Pending, ...] = ()

    def __add__(self, other: Planned) -> Planned:
        return Planned(self.actions + other.actions, self.notes + other.notes, self.pending + other.pending)


def joined(parts: list[Planned]) -> Planned:
    """Many steps' findings as one, joined once: added up one by one, thousands of domains'
    would be quadratic."""
    return Planned(tuple(a for p in parts for a in p.actions), tuple(n for p in parts for n in p.notes),
                   tuple(x for p in parts for x in p.pending))


def noted(*notes: Note) -> Planned:
    return Planned(notes=notes)


@dataclass(frozen=True)
class Context:
    """What the domain steps read: the two states, the options, and what the pool, network
    and image steps planned before them."""

    desired: Desired
    observed: Observed
    options: Options
    waits: Waits
    # The version of an image, by (pool, name), that new overlays go on when it is not the
    # current one: a rebuild's refreshed images.
    versions: Mapping[tuple[str, str], str] = field(default_factory=dict)

    @property
    def by_path(self) -> Mapping[str, tuple[str, str]]:
        # once per plan (cached on Observed): built per domain it made a plan of 10000 domains quadratic
        return self.observed.by_path


def in_order(actions: list[Action], key) -> tuple[Action, ...]:
    """`actions` sorted by `key`, then moved only as far as needed for each to come after
    what it depends on (a rebuild's record of the reset done after its disks), so a plan
    reads in the order it runs: of the actions whose dependencies are listed, the first by
    `key` comes next. A cycle (never planned) keeps the sorted order."""
    ordered = sorted(actions, key=key)
    position = {a.id: i for i, a in enumerate(ordered)}
    deps = [{position[d] for d in a.depends_on if d in position} for a in ordered]
    if all(j < i for i, ds in enumerate(deps) for j in ds):
        return tuple(ordered)  # the usual case: the sorted order already runs forwards
    waiting = [len(ds) for ds in deps]
    dependents: list[list[int]] = [[] for _ in ordered]
    for i, ds in enumerate(deps):
        for j in ds:
            dependents[j].append(i)
    ready = [i for i, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    out: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        out.append(i)
        for j in dependents[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    listed = set(out)
    return tuple(ordered[i] for i in out) + tuple(a for i, a in enumerate(ordered) if i not in listed)
