"""`plan(desired, observed) -> Plan`: what must change for the host to match the specs.

Pure: no libvirt, no files, no clock. The same inputs give the same plan, in the same
order, which is what makes it reviewable and testable with plain data. Every decision not
to act is recorded as a `Note` with its reason, so "nothing to do" is explained too.

Order of work, and why:
- a domain is defined before its new volumes are created, so its ownership record (which
  lists the volumes reconcile creates for it) exists before the volumes do; a run killed in
  between leaves a managed domain with a missing volume, which the next run creates, never
  a volume nobody knows reconcile made;
- on removal, owned volumes are deleted before the domain is undefined, for the same
  reason in reverse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from . import diff, domxml
from .model import (Action, ActionKind, Change, Desired, DomainSpec, Note, Observed, ObservedDomain, Ownership,
                    Plan, ResourceKind, State, VolumeRef)
from .units import format_size

_PHASE = {
    (ResourceKind.POOL, ActionKind.CREATE): 0,
    (ResourceKind.POOL, ActionKind.START): 0,
    (ResourceKind.DOMAIN, ActionKind.STOP): 1,
    (ResourceKind.DOMAIN, ActionKind.CREATE): 2,
    (ResourceKind.DOMAIN, ActionKind.UPDATE): 2,
    (ResourceKind.VOLUME, ActionKind.CREATE): 3,
    (ResourceKind.VOLUME, ActionKind.UPDATE): 3,
    (ResourceKind.DOMAIN, ActionKind.START): 4,
    (ResourceKind.VOLUME, ActionKind.DESTROY): 5,
    (ResourceKind.DOMAIN, ActionKind.DESTROY): 6,
}


def plan(desired: Desired, observed: Observed, prune: bool = False) -> Plan:
    actions: list[Action] = []
    notes: list[Note] = []
    pool_actions = _plan_pools(desired, observed, actions, notes)
    declared = {d.name for d in desired.domains}
    for spec in desired.domains:
        _plan_domain(spec, desired, observed, pool_actions, actions, notes)
    for name, dom in sorted(observed.domains.items()):
        if name in declared or dom.ownership is None or dom.ownership.project != desired.project:
            continue
        if prune:
            _plan_removal(dom, f"no spec mentions it any more (from {dom.ownership.spec_file or 'an unknown file'}); pruned",
                          None, actions)
        else:
            notes.append(Note(ResourceKind.DOMAIN, name, "orphaned: managed by this project but no spec mentions it; apply --prune removes it"))
    actions.sort(key=lambda a: (_PHASE[(a.resource, a.kind)], a.name))
    notes.sort(key=lambda n: (n.resource.value, n.name))
    return Plan(project=desired.project, uri=observed.uri, actions=tuple(actions), notes=tuple(notes))


def plan_destroy(desired: Desired, observed: Observed) -> Plan:
    """Remove every domain these specs manage (and the volumes reconcile created for it)."""
    gone = dataclasses.replace(desired, domains=tuple(dataclasses.replace(d, state=State.ABSENT) for d in desired.domains), pools=())
    return plan(gone, observed)


def _plan_pools(desired: Desired, observed: Observed, actions: list[Action], notes: list[Note]) -> dict[str, str]:
    """Pool actions; returns pool name -> id of the action a volume in it must wait for."""
    waits: dict[str, str] = {}
    for pool in desired.pools:
        have = observed.pools.get(pool.name)
        if have is None:
            a = Action(ActionKind.CREATE, ResourceKind.POOL, pool.name, f"not on the host; directory pool at {pool.path}",
                       changes=(Change("path", None, pool.path),), payload=pool)
            actions.append(a)
            waits[pool.name] = a.id
        elif not have.active:
            a = Action(ActionKind.START, ResourceKind.POOL, pool.name, "defined but not active", payload=pool)
            actions.append(a)
            waits[pool.name] = a.id
        elif have.path and have.path != pool.path:
            notes.append(Note(ResourceKind.POOL, pool.name, f"exists at {have.path}, not {pool.path}; used as it is"))
        else:
            notes.append(Note(ResourceKind.POOL, pool.name, "exists and is active"))
    return waits


def _canonical(spec: DomainSpec, observed: Observed, have: dict) -> dict:
    """The spec's essence, with a machine alias such as `pc` taken as what it expands to."""
    want = spec.essence()
    machine = want.get("machine")
    if machine and have.get("machine") and machine != have["machine"]:
        if observed.machine_aliases.get((spec.arch, machine)) == have["machine"]:
            want["machine"] = have["machine"]
    return want


def _plan_domain(spec: DomainSpec, desired: Desired, observed: Observed, pool_waits: dict[str, str],
                 actions: list[Action], notes: list[Note]) -> None:
    have = observed.domains.get(spec.name)
    if have is not None and have.ownership is None:
        notes.append(Note(ResourceKind.DOMAIN, spec.name,
                          "exists on the host and is not managed by reconcile; left alone "
                          "(rename the spec's domain, or remove the existing one yourself)", refused=True))
        return
    if have is not None and have.ownership.project != desired.project:
        notes.append(Note(ResourceKind.DOMAIN, spec.name,
                          f"is managed by project {have.ownership.project!r}, not {desired.project!r}; left alone",
                          refused=True))
        return
    if spec.state is State.ABSENT:
        if have is None:
            notes.append(Note(ResourceKind.DOMAIN, spec.name, "absent, as the spec says"))
        else:
            _plan_removal(have, "the spec says absent", spec.stop_timeout, actions)
        return

    # Every pool a disk uses must exist or be declared.
    declared_pools = {p.name for p in desired.pools}
    missing_pools = sorted({d.pool for d in spec.disks if d.pool not in observed.pools and d.pool not in declared_pools})
    if missing_pools:
        notes.append(Note(ResourceKind.DOMAIN, spec.name,
                          f"uses pool {', '.join(repr(p) for p in missing_pools)}, which neither exists on the host "
                          "nor is declared in the specs; declare it under 'pools'", refused=True))
        return

    refusals = _volume_refusals(spec, observed)
    if refusals:
        for message in refusals:
            notes.append(Note(ResourceKind.DOMAIN, spec.name, message, refused=True))
        return

    previously_owned = {(v.pool, v.name) for v in have.ownership.volumes} if have else set()
    to_create = [d for d in spec.disks if (d.pool, d.volume) not in observed.volumes]
    owned = tuple(
        VolumeRef(d.pool, d.volume, d.keep) for d in spec.disks
        if (d.pool, d.volume) in previously_owned or d in to_create
    )
    owner = Ownership(project=desired.project, spec_file=spec.origin.file, spec_hash=domxml.spec_hash(spec), volumes=owned)

    domain_action: Action | None = None
    if have is None:
        changes = tuple(Change(k, None, v) for k, v in sorted(spec.essence().items()) if v not in ({}, [], None))
        domain_action = Action(ActionKind.CREATE, ResourceKind.DOMAIN, spec.name, "not on the host",
                               changes=changes, payload=_define_payload(spec, owner, None))
    else:
        want = _canonical(spec, observed, have.essence)
        changes = list(diff.changes(want, have.essence))
        changes.extend(_ownership_changes(have.ownership, owner))
        if changes:
            reason = f"{len(changes)} field{'s' if len(changes) != 1 else ''} differ"
            if have.running:
                reason += "; the domain is running, so the change takes effect at its next restart"
            domain_action = Action(ActionKind.UPDATE, ResourceKind.DOMAIN, spec.name, reason,
                                   changes=tuple(changes), payload=_define_payload(spec, owner, have.uuid))
    if domain_action:
        actions.append(domain_action)
    define_id = (domain_action.id,) if domain_action else ()

    volume_ids: list[str] = []
    for disk in spec.disks:
        vol = observed.volumes.get((disk.pool, disk.volume))
        pool_wait = (pool_waits[disk.pool],) if disk.pool in pool_waits else ()
        label = f"{disk.pool}/{disk.volume}"
        params = {"pool": disk.pool, "name": disk.volume, "capacity": disk.size, "format": disk.format}
        if vol is None:
            a = Action(ActionKind.CREATE, ResourceKind.VOLUME, label,
                       f"disk {disk.target} of {spec.name}: {format_size(disk.size)} {disk.format}",
                       changes=(Change("size", None, disk.size), Change("format", None, disk.format)),
                       depends_on=pool_wait + define_id, payload=params)
            actions.append(a)
            volume_ids.append(a.id)
        elif vol.capacity < disk.size:
            a = Action(ActionKind.UPDATE, ResourceKind.VOLUME, label,
                       f"disk {disk.target} of {spec.name}: grow in place (the guest sees it at its next boot)",
                       changes=(Change("size", vol.capacity, disk.size),), depends_on=define_id, payload=params)
            actions.append(a)
            volume_ids.append(a.id)

    running = have.running if have else False
    if spec.state is State.RUNNING and not running:
        reason = "the spec says running; " + ("it is created stopped" if have is None else "it is shut off")
        actions.append(Action(ActionKind.START, ResourceKind.DOMAIN, spec.name, reason,
                              changes=(Change("state", "stopped" if have else None, "running"),),
                              depends_on=define_id + tuple(volume_ids) + tuple(sorted({pool_waits[d.pool] for d in spec.disks if d.pool in pool_waits})),
                              payload={"stop_timeout": spec.stop_timeout}))
    elif spec.state is State.STOPPED and running:
        actions.append(Action(ActionKind.STOP, ResourceKind.DOMAIN, spec.name, "the spec says stopped; it is running",
                              changes=(Change("state", "running", "stopped"),), payload={"stop_timeout": spec.stop_timeout}))
    if have is not None and domain_action is None and not volume_ids:
        notes.append(Note(ResourceKind.DOMAIN, spec.name, f"{'running' if running else 'stopped'} and matches its spec"))


def _volume_refusals(spec: DomainSpec, observed: Observed) -> list[str]:
    out = []
    for disk in spec.disks:
        vol = observed.volumes.get((disk.pool, disk.volume))
        if vol is None:
            continue
        if vol.format and vol.format != disk.format:
            out.append(f"disk {disk.target}: volume {disk.pool}/{disk.volume} is {vol.format}, the spec says {disk.format}; "
                       "changing the format would replace the disk and lose its data, so it is refused")
        if vol.capacity > disk.size:
            out.append(f"disk {disk.target}: volume {disk.pool}/{disk.volume} is {format_size(vol.capacity)}, the spec says "
                       f"{format_size(disk.size)}; shrinking a disk loses data, so it is refused (set size to at least "
                       f"{format_size(vol.capacity)})")
    return out


def _ownership_changes(before: Ownership | None, after: Ownership) -> list[Change]:
    if before is None:
        return []
    was = {(v.pool, v.name): v.keep for v in before.volumes}
    now = {(v.pool, v.name): v.keep for v in after.volumes}
    return [Change(f"volumes[{pool}/{name}].keep", was[(pool, name)], keep)
            for (pool, name), keep in sorted(now.items()) if (pool, name) in was and was[(pool, name)] != keep]


def _define_payload(spec: DomainSpec, owner: Ownership, uuid: str | None) -> dict:
    return {"xml": domxml.domain_xml(spec, owner, uuid), "autostart": spec.autostart, "spec": spec}


def _plan_removal(dom: ObservedDomain, reason: str, stop_timeout: float | None, actions: list[Action]) -> None:
    stop: tuple[str, ...] = ()
    if dom.running:
        a = Action(ActionKind.STOP, ResourceKind.DOMAIN, dom.name, f"{reason}; it is running",
                   changes=(Change("state", "running", "stopped"),), payload={"stop_timeout": stop_timeout})
        actions.append(a)
        stop = (a.id,)
    volume_ids = []
    for vol in _deletable(dom):
        a = Action(ActionKind.DESTROY, ResourceKind.VOLUME, f"{vol.pool}/{vol.name}", f"created by reconcile for {dom.name}",
                   depends_on=stop, payload={"pool": vol.pool, "name": vol.name})
        actions.append(a)
        volume_ids.append(a.id)
    kept = [f"{v.pool}/{v.name}" for v in dom.ownership.volumes if v.keep] if dom.ownership else []
    why = reason + (f"; keeps {', '.join(kept)}" if kept else "")
    actions.append(Action(ActionKind.DESTROY, ResourceKind.DOMAIN, dom.name, why,
                          changes=(Change("state", "running" if dom.running else "stopped", "absent"),),
                          depends_on=stop + tuple(volume_ids), payload={"uuid": dom.uuid}))


def _deletable(dom: ObservedDomain) -> Iterable[VolumeRef]:
    if dom.ownership is None:
        return ()
    return sorted((v for v in dom.ownership.volumes if not v.keep), key=lambda v: (v.pool, v.name))
