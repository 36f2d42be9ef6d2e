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
from dataclasses import dataclass

from . import diff, domxml, netxml
from .model import (Action, ActionKind, Change, ChangeClass, Desired, DomainSpec, Note, Observed, ObservedDomain,
                    Ownership, Pending, Plan, ResourceKind, State, VolumeRef)
from .units import format_size

_PHASE = {
    (ResourceKind.POOL, ActionKind.CREATE): 0,
    (ResourceKind.POOL, ActionKind.START): 0,
    (ResourceKind.NETWORK, ActionKind.CREATE): 0,
    (ResourceKind.NETWORK, ActionKind.START): 0,
    (ResourceKind.DOMAIN, ActionKind.STOP): 1,
    (ResourceKind.DOMAIN, ActionKind.CREATE): 2,
    (ResourceKind.DOMAIN, ActionKind.UPDATE): 2,
    (ResourceKind.VOLUME, ActionKind.CREATE): 3,
    (ResourceKind.VOLUME, ActionKind.UPDATE): 3,
    (ResourceKind.DOMAIN, ActionKind.START): 4,
    (ResourceKind.VOLUME, ActionKind.DESTROY): 5,
    (ResourceKind.DOMAIN, ActionKind.DESTROY): 6,
}


@dataclass(frozen=True)
class Options:
    """What the command line allows beyond the specs."""

    prune: bool = False
    restart: bool = False         # restart running domains whose changes need it, whatever on_change says
    adopt: bool = False           # take over existing unmanaged domains that specs name
    allow_recreate: bool = False  # allow identity-level changes (type, arch, disk format)


def _order(action: Action) -> tuple:
    phase = _PHASE[(action.resource, action.kind)]
    if isinstance(action.payload, dict) and action.payload.get("replace"):
        phase = 2.5  # a replaced volume goes after its domain's redefinition, before its successor is created
    return (phase, action.name)


def plan(desired: Desired, observed: Observed, prune: bool = False, options: Options | None = None) -> Plan:
    options = options or Options(prune=prune)
    actions: list[Action] = []
    notes: list[Note] = []
    pending: list[Pending] = []
    waits = _plan_pools(desired, observed, actions, notes)
    waits.update(_plan_networks(desired, observed, actions, notes))
    declared = {d.name for d in desired.domains}
    for spec in desired.domains:
        _plan_domain(spec, desired, observed, waits, actions, notes, pending, options)
    for name, dom in sorted(observed.domains.items()):
        if name in declared or dom.ownership is None or dom.ownership.project != desired.project:
            continue
        if options.prune:
            _plan_removal(dom, f"no spec mentions it any more (from {dom.ownership.spec_file or 'an unknown file'}); pruned",
                          None, actions)
        else:
            notes.append(Note(ResourceKind.DOMAIN, name, "orphaned: managed by this project but no spec mentions it; apply --prune removes it"))
    actions.sort(key=_order)
    notes.sort(key=lambda n: (n.resource.value, n.name))
    pending.sort(key=lambda p: p.name)
    return Plan(project=desired.project, uri=observed.uri, actions=tuple(actions), notes=tuple(notes),
                pending=tuple(pending))


def plan_destroy(desired: Desired, observed: Observed) -> Plan:
    """Remove every domain these specs manage (and the volumes reconcile created for it)."""
    gone = dataclasses.replace(desired, domains=tuple(dataclasses.replace(d, state=State.ABSENT) for d in desired.domains),
                               pools=(), networks=())
    return plan(gone, observed)


def _plan_pools(desired: Desired, observed: Observed, actions: list[Action], notes: list[Note]) -> dict[str, str]:
    """Pool actions; returns "pool:NAME" -> id of the action a volume in it must wait for."""
    waits: dict[str, str] = {}
    for pool in desired.pools:
        have = observed.pools.get(pool.name)
        if have is None:
            a = Action(ActionKind.CREATE, ResourceKind.POOL, pool.name, f"not on the host; directory pool at {pool.path}",
                       changes=(Change("path", None, pool.path),), payload=pool)
            actions.append(a)
            waits[f"pool:{pool.name}"] = a.id
        elif not have.active:
            a = Action(ActionKind.START, ResourceKind.POOL, pool.name, "defined but not active", payload=pool)
            actions.append(a)
            waits[f"pool:{pool.name}"] = a.id
        elif have.path and have.path != pool.path:
            notes.append(Note(ResourceKind.POOL, pool.name, f"exists at {have.path}, not {pool.path}; used as it is"))
        else:
            notes.append(Note(ResourceKind.POOL, pool.name, "exists and is active"))
    return waits


def _plan_networks(desired: Desired, observed: Observed, actions: list[Action], notes: list[Note]) -> dict[str, str]:
    """Networks are created, started and marked autostart when missing; never changed or removed."""
    waits: dict[str, str] = {}
    for net in desired.networks:
        have = observed.networks.get(net.name)
        payload = {"spec": net, "xml": netxml.network_xml(net, desired.project)}
        if have is None:
            changes = tuple(Change(k, None, v) for k, v in sorted(net.essence().items()))
            a = Action(ActionKind.CREATE, ResourceKind.NETWORK, net.name, f"not on the host; {net.mode} network",
                       changes=changes, payload=payload)
            actions.append(a)
            waits[f"network:{net.name}"] = a.id
            continue
        differ = diff.changes(net.essence(), have.essence)
        if differ:
            what = ", ".join(f"{c.path} {c.before} -> {c.after}" for c in differ)
            notes.append(Note(ResourceKind.NETWORK, net.name,
                              f"exists but differs ({what}); a network is never changed once it exists, since "
                              "every guest on it would lose its link; used as it is"))
        if not have.active or not have.autostart:
            changes = []
            if not have.active:
                changes.append(Change("active", False, True, ChangeClass.LIVE))
            if not have.autostart:
                changes.append(Change("autostart", False, True, ChangeClass.LIVE))
            a = Action(ActionKind.START, ResourceKind.NETWORK, net.name,
                       "defined but " + " and ".join(("not active",) * (not have.active) + ("not autostarted",) * (not have.autostart)),
                       changes=tuple(changes), payload=payload)
            actions.append(a)
            waits[f"network:{net.name}"] = a.id
        elif not differ:
            notes.append(Note(ResourceKind.NETWORK, net.name, "exists and is active"))
    return waits


def _canonical(spec: DomainSpec, observed: Observed, have: dict) -> dict:
    """The spec's essence, with a machine alias such as `pc` taken as what it expands to."""
    want = spec.essence()
    machine = want.get("machine")
    if machine and have.get("machine") and machine != have["machine"]:
        if observed.machine_aliases.get((spec.arch, machine)) == have["machine"]:
            want["machine"] = have["machine"]
    return want


def _classify(change: Change, want: dict, have: dict) -> ChangeClass:
    """How a change reaches a running domain (see README, "Change classes")."""
    path = change.path
    top = path.split("[")[0].split(".")[0]
    if top in ("type", "arch") or (top == "disks" and path.endswith(".format")):
        return ChangeClass.RECREATE
    if top in ("autostart", "volumes", "owner", "state"):
        return ChangeClass.LIVE
    if top == "current_memory":
        # The balloon moves within the maximum the domain was started with.
        within = want.get("memory") == have.get("memory") and (change.after or 0) <= (have.get("memory") or 0)
        return ChangeClass.LIVE if within else ChangeClass.RESTART
    if top == "vcpus":
        # Plugging in vcpus up to the maximum works on a running domain; taking them away
        # needs the guest to let go of them, so that waits for a restart.
        within = want.get("max_vcpus", have.get("max_vcpus")) == have.get("max_vcpus")
        grows = (change.after or 0) > (change.before or 0)
        return ChangeClass.LIVE if within and grows and change.after <= (have.get("max_vcpus") or 0) else ChangeClass.RESTART
    if top == "cdroms" and path.endswith(".path"):
        return ChangeClass.LIVE  # a media change in a drive that stays
    if top == "boot":
        return ChangeClass.NEXT_BOOT
    return ChangeClass.RESTART


def _classified(changes: Iterable[Change], want: dict, have: dict) -> list[Change]:
    return [dataclasses.replace(c, klass=_classify(c, want, have)) for c in changes]


def _live_ops(changes: Iterable[Change]) -> list[tuple]:
    """What the executor does to a running domain for its live-class changes."""
    ops: list[tuple] = []
    for c in changes:
        if c.klass is not ChangeClass.LIVE:
            continue
        if c.path == "current_memory":
            ops.append(("memory", c.after))
        elif c.path == "vcpus":
            ops.append(("vcpus", c.after))
        elif c.path.startswith("cdroms[") and c.path.endswith(".path"):
            ops.append(("media", c.path[len("cdroms["):c.path.index("]")], c.after))
    return ops


def _plan_domain(spec: DomainSpec, desired: Desired, observed: Observed, waits: dict[str, str],
                 actions: list[Action], notes: list[Note], pending: list[Pending], options: Options) -> None:
    have = observed.domains.get(spec.name)
    adopting = False
    if have is not None and have.ownership is None:
        if not options.adopt:
            notes.append(Note(ResourceKind.DOMAIN, spec.name,
                              "unmanaged (exists): it was not created by reconcile, so it is left alone; "
                              "`apply --adopt` takes it over, showing what would change first"))
            return
        adopting = True
        have = dataclasses.replace(have, ownership=Ownership(project=desired.project))
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

    # Every pool a disk uses and every network an interface uses must exist or be declared.
    declared_pools = {p.name for p in desired.pools}
    missing_pools = sorted({d.pool for d in spec.disks if d.pool not in observed.pools and d.pool not in declared_pools})
    if missing_pools:
        notes.append(Note(ResourceKind.DOMAIN, spec.name,
                          f"uses pool {', '.join(repr(p) for p in missing_pools)}, which neither exists on the host "
                          "nor is declared in the specs; declare it under 'pools'", refused=True))
        return
    declared_networks = {n.name for n in desired.networks}
    missing_networks = sorted({i.network for i in spec.interfaces or () if i.network not in observed.networks
                               and i.network not in declared_networks})
    if missing_networks:
        notes.append(Note(ResourceKind.DOMAIN, spec.name,
                          f"uses network {', '.join(repr(n) for n in missing_networks)}, which neither exists on the "
                          "host nor is declared in the specs; declare it under 'networks'", refused=True))
        return

    refusals = _volume_refusals(spec, observed)
    if have is None:
        refusals += [f"disk {d.target}: volume {d.pool}/{d.volume} is {v.format}, the spec says {d.format}; it exists "
                     "already and is used as it is, so its format cannot change (name another volume)"
                     for d in spec.disks if (v := observed.volumes.get((d.pool, d.volume))) and v.format
                     and v.format != d.format]
    if refusals:
        for message in refusals:
            notes.append(Note(ResourceKind.DOMAIN, spec.name, message, refused=True))
        return
    reformat = [d for d in spec.disks if (v := observed.volumes.get((d.pool, d.volume))) and v.format and v.format != d.format]

    want = _canonical(spec, observed, have.essence if have else {})
    applied = dict(want, state=spec.state.value)
    previously_owned = {(v.pool, v.name) for v in have.ownership.volumes} if have else set()
    to_create = [d for d in spec.disks if (d.pool, d.volume) not in observed.volumes]
    owned = tuple(
        VolumeRef(d.pool, d.volume, d.keep) for d in spec.disks
        if (d.pool, d.volume) in previously_owned or d in to_create
    )
    owner = Ownership(project=desired.project, spec_file=spec.origin.file, spec_hash=domxml.spec_hash(spec),
                      volumes=owned, applied=applied)
    by_path = {v.path: (v.pool, v.name) for v in observed.volumes.values() if v.path}
    net_waits = tuple(sorted({waits[f"network:{i.network}"] for i in spec.interfaces or () if f"network:{i.network}" in waits}))
    pool_waits = tuple(sorted({waits[f"pool:{d.pool}"] for d in spec.disks if f"pool:{d.pool}" in waits}))
    running = have.running if have else False

    domain_action: Action | None = None
    stop_id: tuple[str, ...] = ()
    restarting = False
    if have is None:
        changes = tuple(Change(k, None, v) for k, v in sorted(spec.essence().items()) if v not in ({}, [], None))
        domain_action = Action(ActionKind.CREATE, ResourceKind.DOMAIN, spec.name, "not on the host",
                               changes=changes, payload=_define_payload(spec, owner, None, None, by_path, []))
    else:
        recorded = have.ownership.applied
        changes = _classified(diff.changes(want, have.essence, recorded), want, have.essence)
        for d in reformat:  # the domain XML may already say the new format; the volume does not
            path = f"disks[{d.target}].format"
            if not any(c.path == path for c in changes):
                vol = observed.volumes[(d.pool, d.volume)]
                changes.append(Change(path, vol.format, d.format, ChangeClass.RECREATE))
        changes.extend(_ownership_changes(have.ownership, owner))
        if adopting:
            changes.append(Change("owner", None, desired.project, ChangeClass.LIVE))
        live_only: list[Change] = []
        if running and have.live_essence is not None:
            # What the running domain has, against what the spec wants: live-class fields are
            # corrected at once; other differences already in the config wait for a restart.
            config_paths = {c.path for c in changes}
            # The running memory is what the guest's balloon driver reached, not what was asked
            # for: a guest without the driver never gets there, so it cannot be compared.
            live = dict(have.live_essence, current_memory=have.essence.get("current_memory"))
            for c in _classified(diff.changes(want, live, recorded), want, live):
                if c.path in config_paths:
                    continue
                if c.klass is ChangeClass.LIVE:
                    live_only.append(c)
                else:
                    # The config already says what the spec says: waiting, not drifting.
                    pending.append(Pending(spec.name, "", (dataclasses.replace(c, drift=False),)))
        changes = sorted(changes + live_only, key=lambda c: c.path)
        recreate = [c for c in changes if c.klass is ChangeClass.RECREATE]
        if recreate and not options.allow_recreate:
            what = ", ".join(f"{c.path}: {c.before} -> {c.after}" for c in recreate)
            notes.append(Note(ResourceKind.DOMAIN, spec.name,
                              f"{what} needs the domain recreated"
                              + (" and its disk replaced, which loses the disk's data" if reformat else "")
                              + "; refused (apply --allow-recreate does it)", refused=True))
            return

        mine = [p for p in pending if p.name == spec.name]
        needs_restart = any(c.klass in (ChangeClass.RESTART, ChangeClass.RECREATE) for c in changes) or any(
            c.klass is ChangeClass.RESTART for p in mine for c in p.changes)
        stop_first = running and (needs_restart and (spec.on_change == "restart" or options.restart) or bool(recreate))
        restarting = stop_first and spec.state is State.RUNNING
        if stop_first:
            why = "recreate" if recreate else ("apply --restart" if options.restart else "on_change: restart")
            fields = sorted({c.path for c in changes if c.klass is not ChangeClass.LIVE}
                            | {c.path for p in mine for c in p.changes})
            what = "restart to apply" if restarting else "the spec says stopped; stop first to apply"
            stop = Action(ActionKind.STOP, ResourceKind.DOMAIN, spec.name,
                          f"{what} {', '.join(fields)} ({why})",
                          changes=(Change("state", "running", "stopped", ChangeClass.LIVE),),
                          payload={"stop_timeout": spec.stop_timeout})
            actions.append(stop)
            stop_id = (stop.id,)
            pending[:] = [p for p in pending if p.name != spec.name]
        elif mine:
            merged = tuple(c for p in mine for c in p.changes)
            pending[:] = [p for p in pending if p.name != spec.name]
            pending.append(Pending(spec.name, "in the config, waiting for the running domain to restart "
                                   "(on_change: defer; apply --restart restarts it)", merged))

        if changes:
            reason = f"{len(changes)} field{'s differ' if len(changes) != 1 else ' differs'}"
            if adopting:
                reason = "adopt: add reconcile's ownership record; " + reason
            if any(c.drift for c in changes):
                reason += "; changed outside reconcile (drift)"
            if running and not stop_id:
                deferred = [c.path for c in changes if c.klass in (ChangeClass.RESTART, ChangeClass.NEXT_BOOT)]
                if deferred:
                    reason += f"; the domain is running: {', '.join(deferred)} take{'s' if len(deferred) == 1 else ''} " \
                              "effect at its next restart (on_change: defer)"
            ops = _live_ops(changes) if running and not stop_id else []
            domain_action = Action(ActionKind.UPDATE, ResourceKind.DOMAIN, spec.name, reason,
                                   changes=tuple(changes), depends_on=stop_id,
                                   payload=_define_payload(spec, owner, have.uuid, have.xml, by_path, ops))
    if domain_action:
        actions.append(domain_action)
    define_id = (domain_action.id,) if domain_action else stop_id

    volume_ids: list[str] = []
    for disk in spec.disks:
        vol = observed.volumes.get((disk.pool, disk.volume))
        pool_wait = (waits[f"pool:{disk.pool}"],) if f"pool:{disk.pool}" in waits else ()
        label = f"{disk.pool}/{disk.volume}"
        params = {"pool": disk.pool, "name": disk.volume, "capacity": disk.size, "format": disk.format}
        deps = pool_wait + define_id
        if disk in reformat:
            gone = Action(ActionKind.DESTROY, ResourceKind.VOLUME, label,
                          f"disk {disk.target} of {spec.name}: replaced by a {disk.format} volume (recreate; its data is lost)",
                          changes=(Change("format", vol.format, disk.format, ChangeClass.RECREATE),),
                          depends_on=define_id, payload={"pool": disk.pool, "name": disk.volume, "replace": True})
            actions.append(gone)
            deps = deps + (gone.id,)
            vol = None
        if vol is None:
            a = Action(ActionKind.CREATE, ResourceKind.VOLUME, label,
                       f"disk {disk.target} of {spec.name}: {format_size(disk.size)} {disk.format}",
                       changes=(Change("size", None, disk.size), Change("format", None, disk.format)),
                       depends_on=deps, payload=params)
            actions.append(a)
            volume_ids.append(a.id)
        elif vol.capacity < disk.size:
            a = Action(ActionKind.UPDATE, ResourceKind.VOLUME, label,
                       f"disk {disk.target} of {spec.name}: grow in place (the guest sees it at its next boot)",
                       changes=(Change("size", vol.capacity, disk.size, ChangeClass.NEXT_BOOT),), depends_on=define_id,
                       payload=params)
            actions.append(a)
            volume_ids.append(a.id)

    recorded_state = have.ownership.applied.get("state") if have and have.ownership.applied else None
    if spec.state is State.RUNNING and (not running or restarting):
        if restarting:
            reason, change = "start again after the restart", Change("state", "stopped", "running", ChangeClass.LIVE)
        else:
            reason = "the spec says running; " + ("it is created stopped" if have is None else "it is shut off")
            change = Change("state", "stopped" if have else None, "running", ChangeClass.LIVE if have else None,
                            drift=recorded_state == "running")
        actions.append(Action(ActionKind.START, ResourceKind.DOMAIN, spec.name, reason, changes=(change,),
                              depends_on=define_id + tuple(volume_ids) + pool_waits + net_waits,
                              payload={"stop_timeout": spec.stop_timeout}))
    elif spec.state is State.STOPPED and running and not stop_id:
        actions.append(Action(ActionKind.STOP, ResourceKind.DOMAIN, spec.name, "the spec says stopped; it is running",
                              changes=(Change("state", "running", "stopped", ChangeClass.LIVE,
                                              drift=recorded_state == "stopped"),),
                              payload={"stop_timeout": spec.stop_timeout}))
    if have is not None and domain_action is None and not volume_ids and not restarting:
        notes.append(Note(ResourceKind.DOMAIN, spec.name, f"{'running' if running else 'stopped'} and matches its spec"))


def _volume_refusals(spec: DomainSpec, observed: Observed) -> list[str]:
    out = []
    for disk in spec.disks:
        vol = observed.volumes.get((disk.pool, disk.volume))
        if vol is None:
            continue
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
    return [Change(f"volumes[{pool}/{name}].keep", was[(pool, name)], keep, ChangeClass.LIVE)
            for (pool, name), keep in sorted(now.items()) if (pool, name) in was and was[(pool, name)] != keep]


def _define_payload(spec: DomainSpec, owner: Ownership, uuid: str | None, base: str | None,
                    by_path: dict[str, tuple[str, str]], live: list[tuple]) -> dict:
    xml = domxml.domain_xml(spec, owner, uuid, base=base or None, volume_by_path=by_path)
    return {"xml": xml, "autostart": spec.autostart, "spec": spec, "live": live}


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
