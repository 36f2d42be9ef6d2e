"""Tearing down the pools and networks a project made, after every domain and volume removal
of the run: with `destroy`, those the specs declare; with `apply --prune`, those no spec
declares any more. Pure: no libvirt, no files, no clock.

Only what carries this project's record goes: a network its ownership element
(`codec.network`), a pool the record in its definition (`codec.storage`). A pool or network
without one (there before reconcile, made by hand, or by a reconcile from before pools had
records) or with another project's is never removed. A pool that would still hold a volume
once the run's deletions are done (a kept disk, an image and its record, another project's
volume) stays, and so does a network that a remaining domain, of any project or none, has
an interface on; the plan names them. The runners check it all again just before they act,
so what has come to be used since the plan was made is kept, and a run killed half-way is
finished by the next.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..model import (Action, ActionKind, Change, Desired, Note, NoteKind, Observed, ObservedNetwork, ObservedPool,
                     ResourceKind, State)
from ..model.steps import DeleteVolume, RemoveNetwork, RemovePool, UndefineDomain
from .context import Options, Planned, joined, noted
from .removal import within


@dataclass(frozen=True)
class _Run:
    """What the rest of the plan removes: what a teardown waits for, and may count as gone."""

    after: tuple[str, ...]                 # every domain and volume removal of the run
    volumes: frozenset[tuple[str, str]]    # the volumes it deletes
    domains: frozenset[str]                # the domains it undefines

    @classmethod
    def of(cls, actions: Iterable[Action]) -> _Run:
        removals = [a for a in actions if a.kind is ActionKind.DESTROY
                    and a.resource in (ResourceKind.VOLUME, ResourceKind.DOMAIN)]
        return cls(tuple(sorted(a.id for a in removals)),
                   frozenset((a.payload.pool, a.payload.name) for a in removals if isinstance(a.payload, DeleteVolume)),
                   frozenset(a.name for a in removals if isinstance(a.payload, UndefineDomain)))


def plan_teardown(desired: Desired, observed: Observed, options: Options, actions: Iterable[Action]) -> Planned:
    run = _Run.of(actions)
    if options.destroying:
        why = "removed by `reconcile destroy`"
        return joined([_pool(p.name, why, desired, observed, run) for p in sorted(desired.pools, key=lambda p: p.name)]
                      + [_network(n.name, why, desired, observed, run)
                         for n in sorted(desired.networks, key=lambda n: n.name)])
    return _prune(desired, observed, options, run)


def _prune(desired: Desired, observed: Observed, options: Options, run: _Run) -> Planned:
    """The pools and networks of the project that no spec declares: noted, or with --prune
    removed, within the bounds domains are pruned in (see `removal.plan_prune`)."""
    declared = ({(ResourceKind.POOL, p.name) for p in desired.pools}
                | {(ResourceKind.NETWORK, n.name) for n in desired.networks})
    orphans = sorted([(ResourceKind.POOL, name, p.owner.spec_file) for name, p in observed.pools.items()
                      if p.owner is not None and p.owner.project == desired.project]
                     + [(ResourceKind.NETWORK, name, n.owner_spec) for name, n in observed.networks.items()
                        if n.owner_project == desired.project])
    orphans = [o for o in orphans if (o[0], o[1]) not in declared]
    if not options.prune:
        return noted(*(Note(kind, name, f"orphaned: created by this project (from {spec or 'an unknown file'}) but no "
                            f"spec declares it; apply --prune removes it once {_idle(kind)}", NoteKind.ORPHANED)
                       for kind, name, spec in orphans))
    prunable = [o for o in orphans if options.prune_all or within(o[2], desired.roots)]
    keeps = (any(d.state is not State.ABSENT for d in desired.domains) or desired.pools or desired.networks
             or desired.images)
    if prunable and not keeps and not options.prune_all:
        listed = ", ".join(f"{kind.value} {name}" for kind, name, _ in prunable)
        return noted(*(Note(kind, name, f"--prune would remove every pool and network of project "
                            f"{desired.project!r} on this host ({listed}) while the specs declare nothing: refused, "
                            "since a run given the wrong or an emptied directory looks just like this; pass "
                            "--prune-all if that is what you mean (or use `reconcile destroy` on the specs that "
                            "made them)", NoteKind.REFUSED) for kind, name, _ in prunable))
    out = []
    for kind, name, spec in orphans:
        source = spec or "an unknown file"
        if (kind, name, spec) not in prunable:
            out.append(noted(Note(kind, name, f"orphaned: no spec declares it, but it was made from {source}, which "
                                  "is not among the paths this run was given; not pruned (give that file's "
                                  "directory, or --prune-all to prune it anyway)", NoteKind.ORPHANED)))
            continue
        why = f"no spec declares it any more (from {source}); pruned"
        out.append(_pool(name, why, desired, observed, run) if kind is ResourceKind.POOL
                   else _network(name, why, desired, observed, run))
    return joined(out)


def _idle(kind: ResourceKind) -> str:
    return "it is empty" if kind is ResourceKind.POOL else "no domain uses it"


def _pool(name: str, why: str, desired: Desired, observed: Observed, run: _Run) -> Planned:
    have = observed.pools.get(name)
    if have is None:
        return noted(Note(ResourceKind.POOL, name, "not on the host"))
    kept = _not_ours(ResourceKind.POOL, name, have.owner.project if have.owner else None, desired.project)
    if kept is not None:
        return kept
    users = sorted({dom.name for dom in desired.domains if dom.state is not State.ABSENT
                    for d in dom.disks if d.pool == name}
                   | {dom.name for dom in desired.domains if dom.state is not State.ABSENT and dom.seed
                      and dom.seed.pool == name})
    images = sorted(i.name for i in desired.images if i.pool == name)
    if users or images:
        what = [f"disks of domain {d}" for d in users] + [f"image {i}" for i in images]
        return noted(Note(ResourceKind.POOL, name, f"kept: the specs still put volumes in it ({_few(what)})",
                          NoteKind.WARNING))
    if have.volumes is None:
        checked = " (not active: what it holds is checked when it is removed)"
    else:
        left = [v for v in have.volumes if (name, v) not in run.volumes]
        if left:
            return noted(Note(ResourceKind.POOL, name, f"kept: it still holds volume{'s' if len(left) != 1 else ''} "
                              f"{_few(left)}, which this run does not delete; a pool is removed only once it is "
                              "empty", NoteKind.WARNING))
        checked = ", empty once this run's volumes are deleted" if have.volumes else ", empty"
    return Planned((Action(ActionKind.DESTROY, ResourceKind.POOL, name,
                           f"{why}; made by this project{checked}; {_directory(have)}",
                           changes=(Change(("path",), have.path, None),), depends_on=run.after,
                           payload=RemovePool(name, desired.project)),))


def _directory(have: ObservedPool) -> str:
    path = f"its directory {have.path}" if have.path else "its directory"
    if have.owner is not None and have.owner.made_directory:
        return f"{path} goes too (reconcile made it)"
    return f"{path} stays (it was there before the pool)"


def _network(name: str, why: str, desired: Desired, observed: Observed, run: _Run) -> Planned:
    have = observed.networks.get(name)
    if have is None:
        return noted(Note(ResourceKind.NETWORK, name, "not on the host"))
    kept = _not_ours(ResourceKind.NETWORK, name, have.owner_project, desired.project)
    if kept is not None:
        return kept
    on_host = observed.network_users.get(name, ())
    users = sorted({d for d in on_host if d not in run.domains}
                   | {dom.name for dom in desired.domains if dom.state is not State.ABSENT
                      and any(i.network == name for i in dom.interfaces or ())})
    if users:
        return noted(Note(ResourceKind.NETWORK, name, f"kept: domain{'s' if len(users) != 1 else ''} {_few(users)} "
                          f"{'use' if len(users) != 1 else 'uses'} it; a network is removed only once no domain "
                          "does", NoteKind.WARNING))
    once = " once this run's domains are gone" if on_host else ""
    return Planned((Action(ActionKind.DESTROY, ResourceKind.NETWORK, name,
                           f"{why}; made by this project, and no domain uses it{once}",
                           changes=_network_changes(have), depends_on=run.after,
                           payload=RemoveNetwork(name, desired.project)),))


def _network_changes(have: ObservedNetwork) -> tuple[Change, ...]:
    return tuple(Change((k,), v, None) for k, v in sorted(have.essence.items()) if v is not None)


def _not_ours(kind: ResourceKind, name: str, owner: str | None, project: str) -> Planned | None:
    if owner == project:
        return None
    if owner is None:
        why = ("reconcile did not create it (it carries no record of reconcile's: it was there before, or made by "
               "hand or by a reconcile from before pools had records)" if kind is ResourceKind.POOL
               else "reconcile did not create it (it carries no ownership record of reconcile's)")
    else:
        why = f"it was created by reconcile for project {owner!r}, not this one"
    return noted(Note(kind, name, f"kept: {why}", NoteKind.WARNING))


def _few(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
