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
  reason in reverse;
- a cloud-init seed volume is one of the domain's owned volumes, recorded the same way;
- images are imported before the overlays built on them. An image belongs to no domain,
  since many domains (of any project) may be built on it: reconcile never deletes one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass

from . import diff
from ..codec import domain as domxml
from ..codec import network as netxml
from ..model import (Action, ActionKind, Backing, Change, ChangeClass, Desired, Disk, DomainSpec, NetworkSpec, Note,
                    Observed, ObservedDomain, ObservedVolume, Ownership, Pending, Plan, ResourceKind, State, VolumeRef, shown_source)
from ..model.steps import (ChangeMedia, CreateVolume, DefineDomain, DeleteVolume, EnsureNetwork, EnsurePool,
                           ImportImage, GrowVolume, LiveChange, OverlayBase, ReplaceVolume, SetMemory, SetVcpus,
                           StartDomain, StopDomain, UndefineDomain, WriteSeed)
from ..model.units import format_size

# The order of work (see the module's docstring), by resource and verb; a disk's volume that
# its successor replaces goes after the domain's redefinition, before the new volume.
_PHASE = {
    (ResourceKind.POOL, ActionKind.CREATE): 0,
    (ResourceKind.POOL, ActionKind.START): 0,
    (ResourceKind.NETWORK, ActionKind.CREATE): 0,
    (ResourceKind.NETWORK, ActionKind.START): 0,
    (ResourceKind.IMAGE, ActionKind.CREATE): 1,
    (ResourceKind.DOMAIN, ActionKind.STOP): 2,
    (ResourceKind.DOMAIN, ActionKind.CREATE): 3,
    (ResourceKind.DOMAIN, ActionKind.UPDATE): 3,
    (ResourceKind.VOLUME, ActionKind.CREATE): 5,
    (ResourceKind.VOLUME, ActionKind.UPDATE): 5,
    (ResourceKind.DOMAIN, ActionKind.START): 6,
    (ResourceKind.VOLUME, ActionKind.DESTROY): 7,
    (ResourceKind.DOMAIN, ActionKind.DESTROY): 8,
}
_REPLACED = 4


@dataclass(frozen=True)
class Options:
    """What the command line allows beyond the specs."""

    prune: bool = False
    restart: bool = False         # restart running domains whose changes need it, whatever on_change says
    adopt: bool = False           # take over existing unmanaged domains that specs name
    allow_recreate: bool = False  # allow identity-level changes (type, arch, disk format)
    prune_all: bool = False       # with prune: also domains from files outside the run, even every one
    destroying: bool = False      # `reconcile destroy`: every domain is absent because the command says so


def _order(action: Action) -> tuple:
    phase = _PHASE[(action.resource, action.kind)]
    if isinstance(action.payload, ReplaceVolume):
        phase = _REPLACED
    return (phase, action.name)


def plan(desired: Desired, observed: Observed, prune: bool = False, options: Options | None = None) -> Plan:
    options = options or Options(prune=prune)
    actions: list[Action] = []
    notes: list[Note] = []
    pending: list[Pending] = []
    waits = _plan_pools(desired, observed, actions, notes)
    waits.update(_plan_networks(desired, observed, actions, notes))
    image_waits = _plan_images(desired, observed, waits, actions, notes)
    # once per plan: built per domain it made a plan of 10000 domains quadratic
    by_path = {v.path: (v.pool, v.name) for v in observed.volumes.values() if v.path}
    for spec in desired.domains:
        _plan_domain(spec, desired, observed, waits, image_waits, actions, notes, pending, options, by_path)
    _plan_prune(desired, observed, options, actions, notes)
    actions.sort(key=_order)
    notes.sort(key=lambda n: (n.resource.value, n.name))
    pending.sort(key=lambda p: p.name)
    return Plan(project=desired.project, uri=observed.uri, actions=tuple(actions), notes=tuple(notes),
                pending=tuple(pending))


def plan_destroy(desired: Desired, observed: Observed) -> Plan:
    """Remove every domain these specs manage (and the volumes reconcile created for it)."""
    gone = dataclasses.replace(desired, domains=tuple(dataclasses.replace(d, state=State.ABSENT) for d in desired.domains),
                               pools=(), networks=(), images=())
    return plan(gone, observed, options=Options(destroying=True))


def _within(path: str, roots: tuple[str, ...]) -> bool:
    """Whether a recorded spec file lies in what the run was given (a file, or below a directory)."""
    return path.startswith("/") and any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _plan_prune(desired: Desired, observed: Observed, options: Options, actions: list[Action],
                notes: list[Note]) -> None:
    """Managed domains of the project that no spec mentions: noted, or removed with --prune.

    Pruning reaches only the domains recorded as coming from a file among the paths this run
    was given (`plan --prune dir/a.yaml` never removes what `dir/b.yaml` made), and never
    every domain of the project at once: both take `--prune-all`, since a run given the wrong
    directory, or a directory that lost its files, looks exactly like a lab to tear down.
    """
    declared = {d.name: d.state for d in desired.domains}
    mine = {name: dom for name, dom in sorted(observed.domains.items())
            if dom.ownership is not None and dom.ownership.project == desired.project}
    orphans = {name: dom for name, dom in mine.items() if name not in declared}
    if not options.prune:
        for name in orphans:
            notes.append(Note(ResourceKind.DOMAIN, name, "orphaned: managed by this project but no spec mentions it; "
                              "apply --prune removes it"))
        return
    outside = {name for name, dom in orphans.items() if not _within(dom.ownership.spec_file, desired.roots)}
    prunable = [name for name in orphans if options.prune_all or name not in outside]
    kept = [name for name in mine if declared.get(name, State.ABSENT) is not State.ABSENT]
    if prunable and not kept and not options.prune_all:
        listed = ", ".join(prunable[:5]) + (f" and {len(prunable) - 5} more" if len(prunable) > 5 else "")
        for name in prunable:
            notes.append(Note(ResourceKind.DOMAIN, name,
                              f"--prune would remove every domain of project {desired.project!r} on this host ("
                              f"{listed}) and keep none: refused, since a run given the wrong or an emptied "
                              "directory looks just like this; pass --prune-all if that is what you mean (or use "
                              "`reconcile destroy` on the specs that made them)", refused=True))
        return
    for name, dom in orphans.items():
        source = dom.ownership.spec_file or "an unknown file"
        if name in prunable:
            _plan_removal(dom, f"no spec mentions it any more (from {source}); pruned",
                          dom.ownership.stop_timeout, observed, actions, notes)
        else:
            notes.append(Note(ResourceKind.DOMAIN, name,
                              f"orphaned: no spec mentions it, but it was made from {source}, which is not among "
                              "the paths this run was given; not pruned (give that file's directory, or "
                              "--prune-all to prune it anyway)"))


def _plan_pools(desired: Desired, observed: Observed, actions: list[Action], notes: list[Note]) -> dict[str, str | None]:
    """Pool actions; returns "pool:NAME" -> id of the action a volume in it must wait for
    (None: the pool is refused)."""
    waits: dict[str, str | None] = {}
    for pool in desired.pools:
        have = observed.pools.get(pool.name)
        clash = sorted(p.name for p in observed.pools.values()
                       if have is None and p.path and os.path.normpath(p.path) == os.path.normpath(pool.path))
        if clash:
            notes.append(Note(ResourceKind.POOL, pool.name, f"its path {pool.path} is already the directory of pool "
                              f"{', '.join(clash)} on the host; two pools over one directory see each other's "
                              f"volumes, so it is not created (use pool {clash[0]!r}, or another path)", refused=True))
            waits[f"pool:{pool.name}"] = None
            continue
        if have is None:
            a = Action(ActionKind.CREATE, ResourceKind.POOL, pool.name, f"not on the host; directory pool at {pool.path}",
                       changes=(Change("path", None, pool.path),), payload=EnsurePool(pool.name, pool.path))
            actions.append(a)
            waits[f"pool:{pool.name}"] = a.id
        elif not have.active:
            a = Action(ActionKind.START, ResourceKind.POOL, pool.name, "defined but not active",
                       payload=EnsurePool(pool.name, pool.path))
            actions.append(a)
            waits[f"pool:{pool.name}"] = a.id
        elif have.path and have.path != pool.path:
            notes.append(Note(ResourceKind.POOL, pool.name, f"exists at {have.path}, not {pool.path}; used as it is "
                              "(a pool is never moved: its volumes would be left behind)", always=True))
        else:
            notes.append(Note(ResourceKind.POOL, pool.name, "exists and is active"))
    return waits


def _plan_networks(desired: Desired, observed: Observed, actions: list[Action],
                   notes: list[Note]) -> dict[str, str | None]:
    """Networks are created, started and marked autostart when missing; never changed or removed."""
    waits: dict[str, str | None] = {}
    for net in desired.networks:
        have = observed.networks.get(net.name)
        payload = EnsureNetwork(net.name, netxml.network_xml(net, desired.project))
        clash = _network_clash(net, observed) if have is None else ""
        if clash:
            notes.append(Note(ResourceKind.NETWORK, net.name, f"{clash}; libvirt would refuse to start it, so it is "
                              "not created (give it another address or bridge)", refused=True))
            waits[f"network:{net.name}"] = None
            continue
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


def _network_clash(net: NetworkSpec, observed: Observed) -> str:
    """Why a network to create cannot work beside those on the host: its bridge or its subnet
    is taken. Empty when it can."""
    mine = netxml.subnet(net.ip, net.netmask)
    for other in sorted(observed.networks.values(), key=lambda n: n.name):
        have = other.essence
        if net.bridge and have.get("bridge") == net.bridge:
            return f"its bridge {net.bridge} is already the bridge of network {other.name} on the host"
        theirs = netxml.subnet(have.get("ip"), have.get("netmask"))
        if mine is not None and theirs is not None and mine.overlaps(theirs):
            return f"its subnet {mine} overlaps {theirs} of network {other.name} on the host"
    return ""


def _plan_images(desired: Desired, observed: Observed, pool_waits: dict[str, str], actions: list[Action],
                 notes: list[Note]) -> dict[tuple[str, str], str | None]:
    """Import actions; returns (pool, name) -> id of the import to wait for (None: refused)."""
    waits: dict[tuple[str, str], str | None] = {}
    declared_pools = {p.name for p in desired.pools}
    for image in desired.images:
        label = f"{image.pool}/{image.name}"
        key = (image.pool, image.name)
        if pool_waits.get(f"pool:{image.pool}", "") is None:
            notes.append(Note(ResourceKind.IMAGE, label, f"its pool {image.pool!r} is refused", refused=True))
            waits[key] = None
            continue
        if image.pool not in observed.pools and image.pool not in declared_pools:
            notes.append(Note(ResourceKind.IMAGE, label, f"pool {image.pool!r} neither exists on the host nor is "
                              "declared in the specs; declare it under 'pools'", refused=True))
            waits[key] = None
            continue
        have = observed.volumes.get(key)
        redo = have is not None and have.head is not None and have.head.unfinished
        if have is not None and not redo and have.content_format not in (None, image.format):
            notes.append(Note(ResourceKind.IMAGE, label, f"the volume exists but holds no {image.format} image (an "
                              "import cut short leaves this, as does a volume of that name made by hand); it is "
                              f"not used as a base: delete it (virsh vol-delete --pool {image.pool} {image.name}) "
                              "and apply again", refused=True))
            waits[key] = None
            continue
        if have is not None and not redo:
            notes.append(Note(ResourceKind.IMAGE, label, "imported; an image is imported once and not checked against "
                              "its source again (delete the volume to import it anew)"))
            continue
        checked = "; its sha256 is verified" if image.sha256 else ""
        source = shown_source(image.source)
        changes = [Change("source", None, source), Change("format", None, image.format)]
        if image.sha256:
            changes.append(Change("sha256", None, image.sha256))
        why = ("an earlier import never finished (the volume still holds reconcile's unfinished-import marker); "
               "it is removed and imported again" if redo else "not in the pool")
        a = Action(ActionKind.CREATE, ResourceKind.IMAGE, label, f"{why}; imported from {source}{checked}",
                   changes=tuple(changes), depends_on=(pool_waits[f"pool:{image.pool}"],) if f"pool:{image.pool}" in pool_waits else (),
                   payload=ImportImage(image.pool, image.name, image.source, image.format, image.sha256))
        actions.append(a)
        waits[key] = a.id
    return waits


def _pool_path(pool: str, desired: Desired, observed: Observed) -> str | None:
    have = observed.pools.get(pool)
    if have is not None and have.path:
        return have.path
    return next((p.path for p in desired.pools if p.name == pool), None)


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


def _live_ops(changes: Iterable[Change]) -> tuple[LiveChange, ...]:
    """What the executor does to a running domain for its live-class changes."""
    ops: list[LiveChange] = []
    for c in changes:
        if c.klass is not ChangeClass.LIVE:
            continue
        if c.path == "current_memory":
            ops.append(SetMemory(c.after))
        elif c.path == "vcpus":
            ops.append(SetVcpus(c.after))
        elif c.path.startswith("cdroms[") and c.path.endswith(".path"):
            ops.append(ChangeMedia(c.path[len("cdroms["):c.path.index("]")], c.after))
    return tuple(ops)


def _plan_domain(spec: DomainSpec, desired: Desired, observed: Observed, waits: dict[str, str],
                 image_waits: dict[tuple[str, str], str | None], actions: list[Action], notes: list[Note],
                 pending: list[Pending], options: Options, by_path: dict[str, tuple[str, str]]) -> None:
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
            why = "removed by `reconcile destroy`" if options.destroying else "the spec says absent"
            _plan_removal(have, why, spec.stop_timeout, observed, actions, notes)
        return

    # Every pool a disk uses and every network an interface uses must exist or be declared.
    declared_pools = {p.name for p in desired.pools}
    used_pools = {d.pool for d in spec.disks} | ({spec.seed.pool} if spec.seed else set())
    refused = sorted(f"pool {p!r}" for p in used_pools if waits.get(f"pool:{p}", "") is None)
    refused += sorted({f"network {i.network!r}" for i in spec.interfaces or () if waits.get(f"network:{i.network}", "") is None})
    if refused:
        notes.append(Note(ResourceKind.DOMAIN, spec.name, f"uses {', '.join(refused)}, which is refused (see there)",
                          refused=True))
        return
    missing_pools = sorted(p for p in used_pools if p not in observed.pools and p not in declared_pools)
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

    previously_owned = {(v.pool, v.name) for v in have.ownership.volumes} if have else set()
    bases = {d.target: _base(d, desired, observed, image_waits) for d in spec.disks}
    refusals, reformat = _volume_refusals(spec, observed, bases, previously_owned, options.allow_recreate)
    if refusals:
        for message in refusals:
            notes.append(Note(ResourceKind.DOMAIN, spec.name, message, refused=True))
        return

    want = _canonical(spec, observed, have.essence if have else {})
    applied = dict(want, state=spec.state.value)
    to_create = [d for d in spec.disks if (d.pool, d.volume) not in observed.volumes]
    owned = [VolumeRef(d.pool, d.volume, d.keep) for d in spec.disks
             if (d.pool, d.volume) in previously_owned or d in to_create]
    if spec.seed:  # derived data: always reconcile's own, rebuilt at will
        owned.append(VolumeRef(spec.seed.pool, spec.seed.volume, False))
    owner = Ownership(project=desired.project, spec_file=desired.absolute(spec.origin.file),
                      spec_hash=domxml.spec_hash(spec), volumes=tuple(owned), applied=applied,
                      stop_timeout=spec.stop_timeout)
    net_waits = tuple(sorted({waits[f"network:{i.network}"] for i in spec.interfaces or () if f"network:{i.network}" in waits}))
    pool_waits = tuple(sorted({waits[f"pool:{d.pool}"] for d in spec.disks if f"pool:{d.pool}" in waits}))
    running = have.running if have else False

    domain_action: Action | None = None
    stop_id: tuple[str, ...] = ()
    restarting = False
    if have is None:
        changes = tuple(Change(k, None, v) for k, v in sorted(spec.essence().items()) if v not in ({}, [], None))
        domain_action = Action(ActionKind.CREATE, ResourceKind.DOMAIN, spec.name, "not on the host",
                               changes=changes, payload=_define_payload(spec, owner, None, None, by_path, (),
                                                                        State.STOPPED))
    else:
        recorded = have.ownership.applied
        changes = _classified(diff.changes(want, have.essence, recorded), want, have.essence)
        for d in reformat:  # the domain XML may already say the new format; the volume does not
            known = {c.path for c in changes}
            changes.extend(c for c in _overlay_faults(d, observed.volumes[(d.pool, d.volume)], bases[d.target])
                           if c.path not in known)
        changes.extend(_ownership_changes(have.ownership, owner))
        if adopting:
            changes.append(Change("owner", None, desired.project, ChangeClass.LIVE))
        live_only: list[Change] = []
        mine: list[Pending] = []  # this domain's, kept apart: scanning all of them per domain was quadratic
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
                    mine.append(Pending(spec.name, "", (dataclasses.replace(c, drift=False),)))
        changes = sorted(changes + live_only, key=lambda c: c.path)
        recreate = [c for c in changes if c.klass is ChangeClass.RECREATE]
        # A disk replaced under its own allow_replace needs no --allow-recreate.
        allowed = {f"disks[{d.target}].{f}" for d in reformat for f in ("format", "backing", "backing_format")}
        blocked = [c for c in recreate if c.path not in allowed]
        if blocked and not options.allow_recreate:
            what = ", ".join(f"{c.path}: {c.before} -> {c.after}" for c in blocked)
            notes.append(Note(ResourceKind.DOMAIN, spec.name,
                              f"{what} needs the domain recreated"
                              + (" and its disk replaced, which loses the disk's data" if reformat else "")
                              + "; refused (apply --allow-recreate does it)", refused=True))
            pending.extend(mine)
            return

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
                          payload=StopDomain(spec.stop_timeout))
            actions.append(stop)
            stop_id = (stop.id,)
        elif mine:
            merged = tuple(c for p in mine for c in p.changes)
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
            ops = _live_ops(changes) if running and not stop_id else ()
            domain_action = Action(ActionKind.UPDATE, ResourceKind.DOMAIN, spec.name, reason,
                                   changes=tuple(changes), depends_on=stop_id,
                                   payload=_define_payload(spec, owner, have.uuid, have.xml, by_path, ops,
                                                           State.RUNNING if running and not stop_id else State.STOPPED))
    if domain_action:
        actions.append(domain_action)
    define_id = (domain_action.id,) if domain_action else stop_id

    volume_ids: list[str] = []
    for disk in spec.disks:
        vol = observed.volumes.get((disk.pool, disk.volume))
        base = bases[disk.target]
        pool_wait = (waits[f"pool:{disk.pool}"],) if f"pool:{disk.pool}" in waits else ()
        label = f"{disk.pool}/{disk.volume}"
        create = CreateVolume(disk.pool, disk.volume, disk.size, disk.format,
                              OverlayBase(base.path, base.format) if base else None)
        what = (f"{format_size(disk.size)} " if disk.size is not None else "") + disk.format
        what += (f" overlay on {base.path}" if base else "") + (", as large as its base" if disk.size is None else "")
        deps = pool_wait + define_id + ((base.wait,) if base is not None and base.wait else ())
        if disk in reformat:
            why = "allow_replace" if disk.allow_replace else "--allow-recreate"
            changes = [dataclasses.replace(c, path=c.path.rsplit(".", 1)[1]) for c in _overlay_faults(disk, vol, base)]
            gone = Action(ActionKind.DESTROY, ResourceKind.VOLUME, label,
                          f"disk {disk.target} of {spec.name}: replaced by a new {what} (recreate, {why}; its data is lost)",
                          changes=tuple(changes), depends_on=define_id,
                          payload=ReplaceVolume(disk.pool, disk.volume))
            actions.append(gone)
            deps = deps + (gone.id,)
            vol = None
        if vol is None:
            changes = [Change("size", None, disk.size if disk.size is not None else "(of the base)"),
                       Change("format", None, disk.format)]
            if base:
                changes.append(Change("backing", None, base.path))
            a = Action(ActionKind.CREATE, ResourceKind.VOLUME, label, f"disk {disk.target} of {spec.name}: {what}",
                       changes=tuple(changes), depends_on=deps, payload=create)
            actions.append(a)
            volume_ids.append(a.id)
        elif _virtual_size(vol) < (want_size := _wanted_size(disk, base)):
            live = running and not stop_id
            when = "live: the running guest sees the new size at once" if live else "the guest sees it at its next boot"
            whole = "" if disk.size is not None else f" to the size of its base {base.path}"
            a = Action(ActionKind.UPDATE, ResourceKind.VOLUME, label,
                       f"disk {disk.target} of {spec.name}: grow in place{whole}; {when}",
                       changes=(Change("size", _virtual_size(vol), want_size,
                                       ChangeClass.LIVE if live else ChangeClass.NEXT_BOOT),),
                       depends_on=define_id, payload=GrowVolume(disk.pool, disk.volume, want_size, spec.name, disk.target))
            actions.append(a)
            volume_ids.append(a.id)

    if spec.seed:
        seed_waits = ((waits[f"pool:{spec.seed.pool}"],) if f"pool:{spec.seed.pool}" in waits else ()) + define_id
        a = _plan_seed(spec, observed, have, previously_owned, running and not stop_id, seed_waits, notes)
        if a is not None:
            actions.append(a)
            volume_ids.append(a.id)
    # A seed the domain no longer uses (cloud_init removed, or moved to another pool) is
    # derived data: deleted once the redefined domain no longer refers to it.
    current_seed = (spec.seed.pool, spec.seed.volume) if spec.seed else None
    for pool, name in sorted(previously_owned):
        if name == f"{spec.name}-cidata.iso" and (pool, name) != current_seed:
            actions.append(Action(ActionKind.DESTROY, ResourceKind.VOLUME, f"{pool}/{name}",
                                  f"the cloud-init seed {spec.name} no longer uses", depends_on=define_id,
                                  payload=DeleteVolume(pool, name)))

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
                              payload=StartDomain()))
    elif spec.state is State.STOPPED and running and not stop_id:
        actions.append(Action(ActionKind.STOP, ResourceKind.DOMAIN, spec.name, "the spec says stopped; it is running",
                              changes=(Change("state", "running", "stopped", ChangeClass.LIVE,
                                              drift=recorded_state == "stopped"),),
                              payload=StopDomain(spec.stop_timeout)))
    if have is not None and domain_action is None and not volume_ids and not restarting:
        notes.append(Note(ResourceKind.DOMAIN, spec.name, f"{'running' if running else 'stopped'} and matches its spec"))


@dataclasses.dataclass(frozen=True)
class _Base:
    """Where an overlay's base is: the path qemu records, its format if known, what to wait for."""

    path: str
    format: str | None
    capacity: int | None
    wait: str | None = None  # the import that brings it
    missing: str = ""  # why it cannot be used


def _base(disk: Disk, desired: Desired, observed: Observed, image_waits: dict[tuple[str, str], str | None]) -> _Base | None:
    b = disk.backing
    if b is None:
        return None
    if b.kind == "path":
        for image in desired.images:  # a path where a declared image goes waits for its import
            have = observed.volumes.get((image.pool, image.name))
            where = have.path if have else f"{(_pool_path(image.pool, desired, observed) or '').rstrip('/')}/{image.name}"
            if where == b.path:
                return _base(dataclasses.replace(disk, backing=Backing("image", image.pool, image.name)),
                             desired, observed, image_waits)
        return _Base(b.path, None, None)
    key = (b.pool, b.name)
    have = observed.volumes.get(key)
    pool_path = _pool_path(b.pool, desired, observed) or ""
    path = have.path if have is not None else f"{pool_path.rstrip('/')}/{b.name}"
    if b.kind == "image":
        # The declared format, checked against the content at import: libvirt's own probe
        # may lag an upload, and a base read with the wrong format is a corrupt disk.
        image = next(i for i in desired.images if (i.pool, i.name) == key)
        if key in image_waits and image_waits[key] is None:
            return _Base(path, image.format, None, missing=f"its base image {b.pool}/{b.name} is refused")
        wait = image_waits.get(key)
        return _Base(path, image.format, _virtual_size(have) if have and not wait else None, wait=wait)
    if have is not None:
        # Not imported by reconcile: what its own header says, else libvirt's record.
        fmt = have.head.format if have.head is not None else have.format or None
        return _Base(have.path, fmt, _virtual_size(have))
    return _Base(path, None, None, missing=f"its backing volume {b.pool}/{b.name} does not exist; declare it under "
                 "'images' (with a source) or create it")


def _virtual_size(vol: ObservedVolume) -> int:
    """The size a guest sees: a qcow2 header's own, else libvirt's record (raw: the file's)."""
    if vol.head is not None and vol.head.virtual_size is not None:
        return vol.head.virtual_size
    return vol.capacity


def _wanted_size(disk: Disk, base: _Base | None) -> int:
    """The size a disk must have at least: the spec's, else (an overlay) its base's whole."""
    if disk.size is not None:
        return disk.size
    return base.capacity if base is not None and base.capacity else 0


def _overlay_faults(disk: Disk, vol: ObservedVolume, base: _Base | None) -> list[Change]:
    """How an existing volume differs from the disk the spec describes, in what cannot be
    changed in place: its format, the file it is built on, and the format it reads that
    file as. A wrong backing format means the guest reads the base's container bytes as
    its disk, so it counts as much as a wrong base."""
    out: list[Change] = []
    if vol.format and vol.format != disk.format:
        out.append(Change(f"disks[{disk.target}].format", vol.format, disk.format, ChangeClass.RECREATE))
    if base is None:
        return out
    head = vol.head if vol.head is not None and vol.head.format == "qcow2" else None
    backing = head.backing if head is not None else vol.backing
    if backing and not backing.startswith("/") and vol.path:  # qemu resolves a relative name beside the overlay
        backing = os.path.normpath(os.path.join(os.path.dirname(vol.path), backing))
    if backing != base.path:
        out.append(Change(f"disks[{disk.target}].backing", backing, base.path, ChangeClass.RECREATE))
    elif head is not None and base.format is not None and head.backing_format != base.format:
        out.append(Change(f"disks[{disk.target}].backing_format", head.backing_format, base.format,
                          ChangeClass.RECREATE))
    return out


def _plan_seed(spec: DomainSpec, observed: Observed, have: ObservedDomain | None, previously_owned: set,
               running: bool, waits: tuple[str, ...], notes: list[Note]) -> Action | None:
    """Write the seed volume when it is missing or its files differ from the spec's."""
    seed = spec.seed
    label = f"{seed.pool}/{seed.volume}"
    key = (seed.pool, seed.volume)
    want = seed.file_digests()
    params = WriteSeed(seed.pool, seed.volume, seed.files)
    if key not in observed.volumes:
        return Action(ActionKind.CREATE, ResourceKind.VOLUME, label,
                      f"cloud-init seed of {spec.name}: NoCloud ISO labelled cidata, instance-id {seed.instance_id}",
                      changes=tuple(Change(name, None, digest) for name, digest in want.items()),
                      depends_on=waits, payload=params)
    live = observed.seeds.get(key)
    got = live.file_digests() if live is not None and live.files is not None else None
    if got == want:
        return None
    if got is None and key not in previously_owned:
        notes.append(Note(ResourceKind.VOLUME, label, f"exists and is not a cloud-init seed that reconcile wrote for "
                          f"{spec.name}; it is left alone (remove it, or give the domain another name)", refused=True))
        return None
    # cloud-init reads the seed when the guest boots: the volume's change is next-boot; the
    # domain's `cloud_init.instance_id` (its metadata) carries the restart that it waits for.
    nb = ChangeClass.NEXT_BOOT
    changes = [Change(name, (got or {}).get(name), digest, nb) for name, digest in want.items()
               if (got or {}).get(name) != digest]
    changes += [Change(name, digest, None, nb) for name, digest in (got or {}).items() if name not in want]
    if live is not None and live.instance_id != seed.instance_id:
        changes.append(Change("instance-id", live.instance_id, seed.instance_id, nb))
    when = ("cloud-init runs again with it at the domain's next boot" if running or have is None
            else "cloud-init runs again with it when the domain boots")
    return Action(ActionKind.UPDATE, ResourceKind.VOLUME, label,
                  f"cloud-init seed of {spec.name} {'is unreadable' if got is None else 'changed'}: rebuilt; {when}",
                  changes=tuple(changes), depends_on=waits, payload=params)


def _volume_refusals(spec: DomainSpec, observed: Observed, bases: dict, owned: set,
                     allow_recreate: bool) -> tuple[list[str], list[Disk]]:
    """What the spec asks of existing volumes that reconcile refuses, and which disks it replaces."""
    out: list[str] = []
    replace: list[Disk] = []
    for disk in spec.disks:
        base = bases[disk.target]
        vol = observed.volumes.get((disk.pool, disk.volume))
        if base is not None and base.missing and (vol is None or vol.backing != base.path):
            out.append(f"disk {disk.target}: {base.missing}")
            continue
        if vol is not None and (others := [d for d in observed.attached.get((disk.pool, disk.volume), ())
                                           if d != spec.name]):
            out.append(f"disk {disk.target}: volume {disk.pool}/{disk.volume} is already a disk of domain "
                       f"{', '.join(others)}; two guests writing one disk corrupt it, so it is not attached "
                       "(name another volume, or remove it from that domain first)")
            continue
        if vol is None:
            if base is not None and base.capacity and disk.size is not None and disk.size < base.capacity:
                out.append(f"disk {disk.target}: size {format_size(disk.size)} is smaller than its base "
                           f"{base.path} ({format_size(base.capacity)}); an overlay shows its base whole, so set "
                           f"size to at least {format_size(base.capacity)} or leave it out")
            continue
        why = []
        for fault in _overlay_faults(disk, vol, base):
            leaf = fault.path.rsplit(".", 1)[1]
            if leaf == "format":
                why.append(f"is {fault.before}, the spec says {fault.after}")
            elif leaf == "backing":
                why.append(f"is backed by {fault.before or 'nothing'}, the spec says {fault.after}")
            else:
                why.append(f"reads its base {base.path} as {fault.before or 'an unstated format'}, but the base is "
                           f"a {fault.after} image (the guest would see the {fault.after} container's bytes as its "
                           "disk)")
        if why:
            what = f"disk {disk.target}: volume {disk.pool}/{disk.volume} {' and '.join(why)}"
            if (disk.pool, disk.volume) not in owned:
                out.append(f"{what}; reconcile did not create that volume for this domain, so it is used as it is "
                           "and never replaced (name another volume)")
            elif not (disk.allow_replace or allow_recreate):
                out.append(f"{what}; that would replace the disk and lose its data, so it is refused "
                           "(set allow_replace: true on the disk, or apply --allow-recreate)")
            else:
                replace.append(disk)
            continue
        size = _virtual_size(vol)
        if disk.size is not None and size > disk.size:
            out.append(f"disk {disk.target}: volume {disk.pool}/{disk.volume} is {format_size(size)}, the spec says "
                       f"{format_size(disk.size)}; shrinking a disk loses data, so it is refused (set size to at least "
                       f"{format_size(size)})")
    return out, replace


def _ownership_changes(before: Ownership | None, after: Ownership) -> list[Change]:
    if before is None:
        return []
    was = {(v.pool, v.name): v.keep for v in before.volumes}
    now = {(v.pool, v.name): v.keep for v in after.volumes}
    out = [Change(f"volumes[{pool}/{name}].keep", was[(pool, name)], keep, ChangeClass.LIVE)
           for (pool, name), keep in sorted(now.items()) if (pool, name) in was and was[(pool, name)] != keep]
    # Recorded for a prune, which has no spec to read it from; a record from before there
    # was one is brought up to date with the next change, not on its own.
    if before.stop_timeout is not None and before.stop_timeout != after.stop_timeout:
        out.append(Change("stop_timeout", before.stop_timeout, after.stop_timeout, ChangeClass.LIVE))
    return out


def _define_payload(spec: DomainSpec, owner: Ownership, uuid: str | None, base: str | None,
                    by_path: dict[str, tuple[str, str]], live: tuple[LiveChange, ...], state: State) -> DefineDomain:
    """What defining the domain takes. The state recorded as applied is the one the domain
    has once defined; the start or stop that follows records its own when it succeeds, so a
    start that never happened (a run cut short) is not later taken for drift."""
    owner = dataclasses.replace(owner, applied=dict(owner.applied or {}, state=state.value))
    xml = domxml.domain_xml(spec, owner, uuid, base=base or None, volume_by_path=by_path)
    return DefineDomain(xml, spec.autostart, live)


def _plan_removal(dom: ObservedDomain, reason: str, stop_timeout: float | None, observed: Observed,
                  actions: list[Action], notes: list[Note]) -> None:
    stop: tuple[str, ...] = ()
    if dom.running:
        a = Action(ActionKind.STOP, ResourceKind.DOMAIN, dom.name, f"{reason}; it is running",
                   changes=(Change("state", "running", "stopped"),), payload=StopDomain(stop_timeout))
        actions.append(a)
        stop = (a.id,)
    volume_ids = []
    spared = []
    backs = {v.backing: v for v in observed.volumes.values() if v.backing}
    for vol in _deletable(dom):
        have = observed.volumes.get((vol.pool, vol.name))
        if have is not None and have.path in backs:  # never pull the base from under another disk
            spared.append(f"{vol.pool}/{vol.name} (the base of {backs[have.path].pool}/{backs[have.path].name})")
            continue
        others = [d for d in observed.attached.get((vol.pool, vol.name), ()) if d != dom.name]
        if others:  # never delete a disk another guest has, whoever made it
            notes.append(Note(ResourceKind.VOLUME, f"{vol.pool}/{vol.name}",
                              f"created by reconcile for {dom.name}, but now also a disk of domain "
                              f"{', '.join(others)}; not deleted with {dom.name} (delete it by hand once no domain "
                              "uses it)", refused=True))
            spared.append(f"{vol.pool}/{vol.name} (a disk of {', '.join(others)})")
            continue
        a = Action(ActionKind.DESTROY, ResourceKind.VOLUME, f"{vol.pool}/{vol.name}", f"created by reconcile for {dom.name}",
                   depends_on=stop, payload=DeleteVolume(vol.pool, vol.name))
        actions.append(a)
        volume_ids.append(a.id)
    kept = [f"{v.pool}/{v.name}" for v in dom.ownership.volumes if v.keep] if dom.ownership else []
    why = reason + (f"; keeps {', '.join(kept + spared)}" if kept or spared else "")
    actions.append(Action(ActionKind.DESTROY, ResourceKind.DOMAIN, dom.name, why,
                          changes=(Change("state", "running" if dom.running else "stopped", "absent"),),
                          depends_on=stop + tuple(volume_ids), payload=UndefineDomain(dom.uuid)))


def _deletable(dom: ObservedDomain) -> Iterable[VolumeRef]:
    if dom.ownership is None:
        return ()
    return sorted((v for v in dom.ownership.volumes if not v.keep), key=lambda v: (v.pool, v.name))
