"""`reconcile rebuild`: domains back to their first boot, with the same identity.

A reset keeps the domain's definition, UUID and MACs, its `keep: true` disks and every disk
without a base; it replaces each overlay by a fresh one on its base (instant: nothing is
copied), rebuilds the seed with a new instance-id (cloud-init then runs as on a first boot),
and starts the domain again if it ran. In this order, for crash safety:

1. record the reset as begun in the domain's metadata (`WriteRecord`), with whether it ran:
   a run killed after this point leaves a domain that says so, and the next `rebuild` or
   `apply` finishes the reset (and starts it if it ran) instead of taking half-reset disks
   as they are;
2. stop (its stop_timeout, then forced);
3. the fresh disks and the seed, at once;
4. the domain's record says the reset is done (its generation counted; the mark stays,
   done, when a start is to follow); nothing else of its definition changes, so a spec
   edited since the last apply is still apply's to plan, with its checks;
5. start it, if it ran (or `--start`); the start clears the mark.

A domain killed before step 1 is as it was; one killed after it is finished by the next
run. Never a domain without a root disk: the start waits for every disk.

Pure: no libvirt, no files, no clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..codec import ownership
from ..model import (Action, ActionKind, Change, Desired, DomainSpec, ImageSpec, Note, NoteKind, Observed,
                     ObservedDomain, Plan, ResourceKind, SourceStamp, State)
from ..model.observed import ResetMark
from ..model.steps import OverlayBase, RecreateVolume, StartDomain, StopDomain, WriteRecord, WriteSeed
from .context import Context, Options, Planned, in_order, joined, noted
from .disks import base_of
from .refresh import plan_old_versions, plan_refresh

_PHASE = {(ResourceKind.IMAGE, ActionKind.CREATE): 0, (ResourceKind.IMAGE, ActionKind.UPDATE): 0,
          (ResourceKind.DOMAIN, ActionKind.RESET): 1, (ResourceKind.DOMAIN, ActionKind.STOP): 2,
          (ResourceKind.VOLUME, ActionKind.RESET): 3, (ResourceKind.DOMAIN, ActionKind.UPDATE): 4,
          (ResourceKind.DOMAIN, ActionKind.START): 5, (ResourceKind.IMAGE, ActionKind.DESTROY): 6}


def plan_rebuild(desired: Desired, observed: Observed, names: tuple[str, ...] = (), start: bool = False,
                 refresh: Mapping[str, SourceStamp | str] | None = None) -> Plan:
    """Reset the named domains (default: every domain of the specs that reconcile manages).

    `refresh`: for each image to refresh (by name), what its source says now, or why it
    could not be read; the images of the chosen domains among them get a new version when
    their source changed, the fresh overlays are built on it, and the old versions nothing
    is built on any more are deleted last (see `refresh`)."""
    chosen = [d for d in desired.domains if not names or d.name in names]
    images = _refreshed(desired, chosen, refresh or {})
    fetched, waits, versions = plan_refresh(observed, images, refresh or {})
    ctx = Context(desired, observed, Options(), waits, versions)
    found = joined([fetched, *(_one(spec, ctx, start, explicit=bool(names)) for spec in chosen)])
    if images:
        resets = [a for a in found.actions if a.resource is ResourceKind.VOLUME]
        after = tuple(a.id for a in found.actions if a.resource in (ResourceKind.VOLUME, ResourceKind.IMAGE))
        found = found + plan_old_versions(observed, images, versions, resets, after)
    return Plan(project=desired.project, uri=observed.uri,
                actions=in_order(list(found.actions), lambda a: (_PHASE[(a.resource, a.kind)], a.name)),
                notes=tuple(sorted(found.notes, key=lambda n: (n.resource.value, n.name))))


def _refreshed(desired: Desired, chosen: list[DomainSpec], refresh: Mapping[str, object]) -> list[ImageSpec]:
    """The images to refresh that the chosen domains' disks are built on."""
    used = {(d.backing.pool, d.backing.name) for spec in chosen for d in spec.disks
            if d.backing is not None and d.backing.kind == "image" and d.resets}
    return [i for i in desired.images if i.name in refresh and (i.pool, i.name) in used]


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
    refused = _unready(spec, ctx)
    if refused:
        return noted(Note(ResourceKind.DOMAIN, spec.name, "; ".join(refused) + "; run `reconcile apply` first",
                          NoteKind.REFUSED))
    name = spec.name
    before = spec.seed.at_generation(have.ownership.rebuilds) if spec.seed else None
    after = spec.seed.at_generation(generation) if spec.seed else None
    marked = dataclasses.replace(have.ownership, reset=ResetMark(generation, start))
    # A new version of a base is imported first: a download that fails leaves the domain
    # running as it was, not stopped and half-reset.
    imports = tuple(sorted({b.wait for d in spec.disks if d.resets and (b := base_of(d, ctx)) and b.wait}))
    mark = Action(ActionKind.RESET, ResourceKind.DOMAIN, name,
                  f"{why}: recorded in the domain before anything else, so a run cut short is finished by the next",
                  changes=(Change(("rebuilds",), have.ownership.rebuilds, generation),), depends_on=imports,
                  payload=WriteRecord(ownership.owner_xml(marked, before.instance_id if before else None)))
    actions: list[Action] = [mark]
    after_stop: tuple[str, ...] = (mark.id,)
    if have.running:
        stop = Action(ActionKind.STOP, ResourceKind.DOMAIN, name, f"{why}: stopped first",
                      changes=(Change(("state",), "running", "stopped"),), depends_on=(mark.id,),
                      payload=StopDomain(spec.stop_timeout))
        actions.append(stop)
        after_stop = (stop.id,)
    fresh, notes = _fresh_disks(spec, ctx, have, after_stop)
    if after is not None:
        fresh.append(Action(ActionKind.RESET, ResourceKind.VOLUME, f"{after.pool}/{after.volume}",
                            f"cloud-init seed of {name}: a new instance-id, so cloud-init runs as on a first boot",
                            changes=(Change(("instance-id",), before.instance_id, after.instance_id),),
                            depends_on=after_stop, payload=WriteSeed(after.pool, after.volume, after.files)))
    actions += fresh
    # Only the record changes: what the spec says beyond the reset is apply's to plan, with
    # its own checks (a format change of a kept disk, a recreate), not a rebuild's.
    applied = dict(have.ownership.applied or {})
    if after is not None and "cloud_init" in applied:
        applied["cloud_init"] = {"instance_id": after.instance_id}
    done = dataclasses.replace(have.ownership, rebuilds=generation, applied=applied or None,
                               # the mark stays, done, until the start clears it: a run cut short between still starts it
                               reset=ResetMark(generation, True) if start else None)
    finish = Action(ActionKind.UPDATE, ResourceKind.DOMAIN, name,
                    f"{why}: done, recorded as rebuild {generation}; definition, UUID and MACs kept",
                    depends_on=after_stop + tuple(a.id for a in fresh),
                    payload=WriteRecord(ownership.owner_xml(done, after.instance_id if after else None)))
    actions.append(finish)
    if start:
        actions.append(Action(ActionKind.START, ResourceKind.DOMAIN, name, f"{why}: start again, as at its first boot",
                              changes=(Change(("state",), "stopped", "running"),), depends_on=(finish.id,),
                              payload=StartDomain()))
    return Planned(tuple(actions), notes=tuple(notes))


def _unready(spec: DomainSpec, ctx: Context) -> list[str]:
    """What keeps a domain from being reset: a base that is missing, refused or an import
    never finished; a disk that is kept but not there."""
    out = []
    for d in spec.disks:
        if not d.resets:
            if (d.pool, d.volume) not in ctx.observed.volumes:
                out.append(f"disk {d.target}: volume {d.pool}/{d.volume} is not on the host")
            continue
        base = base_of(d, ctx)
        if base is None:
            continue
        if base.missing:
            out.append(f"disk {d.target}: {base.missing}")
        elif d.backing.kind != "path" and base.wait is None:
            key = ctx.by_path.get(base.path, (d.backing.pool, d.backing.name))
            vol = ctx.observed.volumes.get(key)
            if vol is None:
                out.append(f"disk {d.target}: its base {d.backing} is not on the host")
            elif vol.head is not None and vol.head.unfinished:
                out.append(f"disk {d.target}: its base {d.backing} is an import that never finished")
    return out


def _fresh_disks(spec: DomainSpec, ctx: Context, have: ObservedDomain,
                 after_stop: tuple[str, ...]) -> tuple[list[Action], list[Note]]:
    """A fresh volume for each disk that resets and is the domain's own: one reconcile did
    not create for it, or that another domain also has, is used as it is and never replaced."""
    owned = {(v.pool, v.name) for v in have.ownership.volumes}
    actions, notes = [], []
    for d in spec.disks:
        if not d.resets:
            continue
        key, label = (d.pool, d.volume), f"{d.pool}/{d.volume}"
        others = [o for o in ctx.observed.attached.get(key, ()) if o != spec.name]
        if key not in owned or others:
            whose = f"also a disk of {', '.join(others)}" if others else "not created by reconcile for this domain"
            notes.append(Note(ResourceKind.VOLUME, label, f"disk {d.target} of {spec.name}: {whose}, so a rebuild "
                                                          "keeps it as it is", NoteKind.WARNING))
            continue
        base = base_of(d, ctx)
        what = f"fresh overlay on {base.path}" if base else "created empty again (rebuild: recreate; its data is lost)"
        size = d.size if d.size is not None or base is None else base.capacity or None
        actions.append(Action(ActionKind.RESET, ResourceKind.VOLUME, label, f"disk {d.target} of {spec.name}: {what}",
                              depends_on=after_stop + ((base.wait,) if base and base.wait else ()),
                              payload=RecreateVolume(d.pool, d.volume, size, d.format,
                                                     OverlayBase(base.path, base.format) if base else None)))
    return actions, notes
