"""`reconcile rebuild`: domains back to their first boot, with the same identity.

A reset keeps the domain's definition, UUID and MACs, its `keep: true` disks and every disk
without a base; it replaces each overlay by a fresh one on its base (instant: nothing is
copied), rebuilds the seed with a new instance-id (cloud-init then runs as on a first boot),
and starts the domain again if it ran. In this order, for crash safety:

1. record the reset as begun in the domain's metadata (`MarkReset`), with whether it ran:
   a run killed after this point leaves a domain that says so, and the next `rebuild` or
   `apply` finishes the reset (and starts it if it ran) instead of taking half-reset disks
   as they are;
2. stop (its stop_timeout, then forced);
3. the fresh disks and the seed, at once;
4. redefine the domain with its record saying the reset is done (its generation counted;
   the mark stays, done, when a start is to follow);
5. start it, if it ran (or `--start`); the start clears the mark.

A domain killed before step 1 is as it was; one killed after it is finished by the next
run. Never a domain without a root disk: the start waits for every disk.

Pure: no libvirt, no files, no clock.
"""

from __future__ import annotations

import dataclasses

from ..codec import ownership
from ..model import (Action, ActionKind, Change, Desired, DomainSpec, Note, NoteKind, Observed, ObservedDomain, Plan,
                     ResourceKind, State)
from ..model.observed import ResetMark
from ..model.steps import MarkReset, OverlayBase, RecreateVolume, StartDomain, StopDomain, WriteSeed
from .classes import canonical
from .context import Context, Options, Planned, Waits, in_order, joined, noted
from .disks import base_of
from .record import define_payload, owner_of

_PHASE = {(ResourceKind.DOMAIN, ActionKind.RESET): 0, (ResourceKind.DOMAIN, ActionKind.STOP): 1,
          (ResourceKind.VOLUME, ActionKind.RESET): 2, (ResourceKind.DOMAIN, ActionKind.UPDATE): 3,
          (ResourceKind.DOMAIN, ActionKind.START): 4}


def plan_rebuild(desired: Desired, observed: Observed, names: tuple[str, ...] = (), start: bool = False) -> Plan:
    """Reset the named domains (default: every domain of the specs that reconcile manages)."""
    ctx = Context(desired, observed, Options(), Waits())
    chosen = [d for d in desired.domains if not names or d.name in names]
    found = joined([_one(spec, ctx, start, explicit=bool(names)) for spec in chosen])
    return Plan(project=desired.project, uri=observed.uri,
                actions=in_order(list(found.actions), lambda a: (_PHASE[(a.resource, a.kind)], a.name)),
                notes=tuple(sorted(found.notes, key=lambda n: (n.resource.value, n.name))))


def _one(spec: DomainSpec, ctx: Context, start: bool, explicit: bool) -> Planned:
    have = ctx.observed.domains.get(spec.name)
    if spec.state is State.ABSENT:
        return noted(Note(ResourceKind.DOMAIN, spec.name, "the spec says absent: nothing to rebuild",
                          NoteKind.REFUSED if explicit else NoteKind.CONVERGED))
    if have is None:
        return noted(Note(ResourceKind.DOMAIN, spec.name, "not on the host: `reconcile apply` creates it",
                          NoteKind.REFUSED if explicit else NoteKind.WARNING))
    if have.ownership is None or have.ownership.project != ctx.desired.project:
        whose = "not created by reconcile" if have.ownership is None else \
            f"managed by project {have.ownership.project!r}"
        return noted(Note(ResourceKind.DOMAIN, spec.name, f"{whose}: never rebuilt by this project",
                          NoteKind.REFUSED if explicit else NoteKind.WARNING))
    mark = have.ownership.reset
    if mark is not None and mark.generation > have.ownership.rebuilds:
        return plan_reset(spec, ctx, have, mark.generation, mark.start or start, "finishing the rebuild begun earlier")
    # A mark of a reset done but not yet started again still says the domain ran.
    ran = have.running or (mark is not None and mark.start)
    return plan_reset(spec, ctx, have, have.ownership.rebuilds + 1, ran or start, "rebuild")


def plan_reset(spec: DomainSpec, ctx: Context, have: ObservedDomain, generation: int, start: bool,
               why: str) -> Planned:
    """The reset of one domain to `generation` (see the module's docstring)."""
    volumes = ctx.observed.volumes
    missing = [f"disk {d.target}: its base {d.backing} is not on the host" for d in spec.disks
               if d.resets and d.backing is not None and d.backing.kind != "path"
               and (d.backing.pool, d.backing.name) not in volumes]
    missing += [f"disk {d.target}: volume {d.pool}/{d.volume} is not on the host" for d in spec.disks
                if not d.resets and (d.pool, d.volume) not in volumes]
    if missing:
        return noted(Note(ResourceKind.DOMAIN, spec.name, "; ".join(missing) + "; run `reconcile apply` first",
                          NoteKind.REFUSED))
    name = spec.name
    before = spec.seed.at_generation(have.ownership.rebuilds) if spec.seed else None
    marked = dataclasses.replace(have.ownership, reset=ResetMark(generation, start))
    mark = Action(ActionKind.RESET, ResourceKind.DOMAIN, name,
                  f"{why}: recorded in the domain before anything else, so a run cut short is finished by the next",
                  changes=(Change(("rebuilds",), have.ownership.rebuilds, generation),),
                  payload=MarkReset(ownership.owner_xml(marked, before.instance_id if before else None)))
    actions: list[Action] = [mark]
    after_stop: tuple[str, ...] = (mark.id,)
    if have.running:
        stop = Action(ActionKind.STOP, ResourceKind.DOMAIN, name, f"{why}: stopped first",
                      changes=(Change(("state",), "running", "stopped"),), depends_on=(mark.id,),
                      payload=StopDomain(spec.stop_timeout))
        actions.append(stop)
        after_stop = (stop.id,)
    fresh = []
    for d in spec.disks:
        if not d.resets:
            continue
        base = base_of(d, ctx)
        label = f"{d.pool}/{d.volume}"
        what = f"fresh overlay on {base.path}" if base else "created empty again (rebuild: recreate; its data is lost)"
        fresh.append(Action(ActionKind.RESET, ResourceKind.VOLUME, label, f"disk {d.target} of {name}: {what}",
                            depends_on=after_stop,
                            payload=RecreateVolume(d.pool, d.volume, d.size if d.size is not None or base is None
                                                   else base.capacity or None, d.format,
                                                   OverlayBase(base.path, base.format) if base else None)))
    spec = dataclasses.replace(spec, seed=spec.seed.at_generation(generation)) if spec.seed else spec
    if spec.seed:
        fresh.append(Action(ActionKind.RESET, ResourceKind.VOLUME, f"{spec.seed.pool}/{spec.seed.volume}",
                            f"cloud-init seed of {name}: a new instance-id, so cloud-init runs as on a first boot",
                            changes=(Change(("instance-id",), before.instance_id, spec.seed.instance_id),),
                            depends_on=after_stop, payload=WriteSeed(spec.seed.pool, spec.seed.volume, spec.seed.files)))
    actions += fresh
    previously_owned = {(v.pool, v.name) for v in have.ownership.volumes}
    want = canonical(spec, ctx.observed, have.essence)
    owner = owner_of(spec, ctx, want, previously_owned, generation)
    if start:  # the mark stays, done, until the start clears it: a run cut short in between still starts it
        owner = dataclasses.replace(owner, reset=ResetMark(generation, True))
    finish = Action(ActionKind.UPDATE, ResourceKind.DOMAIN, name,
                    f"{why}: done, recorded as rebuild {generation}; definition, UUID and MACs kept",
                    depends_on=after_stop + tuple(a.id for a in fresh),
                    payload=define_payload(spec, owner, have.uuid, have.xml, ctx, (), State.STOPPED))
    actions.append(finish)
    if start:
        actions.append(Action(ActionKind.START, ResourceKind.DOMAIN, name, f"{why}: start again, as at its first boot",
                              changes=(Change(("state",), "stopped", "running"),), depends_on=(finish.id,),
                              payload=StartDomain()))
    return Planned(tuple(actions))
