"""Planning removals: a domain the spec says is absent, `destroy`, and `--prune` of the
managed domains no spec mentions any more, within the bounds that keep a typo from
emptying a lab. Pure: no libvirt, no files, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model import Action, ActionKind, Change, Desired, Note, NoteKind, Observed, ObservedDomain, ResourceKind, State, VolumeRef
from ..model.steps import DeleteVolume, StopDomain, UndefineDomain
from .context import Options, Planned, joined, noted


def within(path: str, roots: tuple[str, ...]) -> bool:
    """Whether a recorded spec file lies in what the run was given (a file, or below a directory)."""
    return path.startswith("/") and any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def plan_prune(desired: Desired, observed: Observed, options: Options) -> Planned:
    """Managed domains of the project that no spec mentions: noted, or removed with --prune.

    Pruning reaches only the domains recorded as coming from a file among the paths this run
    was given (`plan --prune dir/a.yaml` never removes what `dir/b.yaml` made), and never
    every domain of the project at once: both take `--prune-all`, since a run given the wrong
    directory, or a directory that lost its files, looks exactly like a lab to tear down.
    """
    declared = {d.name: d.state for d in desired.domains}
    mine = {name: dom for name, dom in sorted(observed.domains.items())
            if dom.ownership is not None and dom.ownership.project == desired.project}
    moving = {name: dom for name, dom in mine.items()
              if (name in options.moving_out or name in options.held) and name not in declared}
    out: list[Planned] = []
    for name, dom in moving.items():
        if name in options.held:  # its new host is not changed by this run: never an orphan here
            out.append(noted(Note(ResourceKind.DOMAIN, name, f"its spec moved it away; kept here, since "
                                  f"{options.held[name]}", NoteKind.WARNING)))
            continue
        to = options.moving_out[name]
        if options.allow_recreate:
            out.append(plan_removal(dom, f"its spec moved it to host {to}: destroyed here first (--allow-recreate), "
                                         "then created there", dom.ownership.stop_timeout, observed))
        else:
            out.append(noted(Note(ResourceKind.DOMAIN, name, f"its spec moved it to host {to}; kept here until the "
                                  "move is allowed (--allow-recreate)", NoteKind.WARNING)))
    mine = {name: dom for name, dom in mine.items() if name not in moving}
    orphans = {name: dom for name, dom in mine.items() if name not in declared}
    if not options.prune:
        return joined(out + [noted(*(Note(ResourceKind.DOMAIN, name, "orphaned: managed by this project but no spec "
                                          "mentions it; apply --prune removes it", NoteKind.ORPHANED)
                                     for name in orphans))])
    outside = {name for name, dom in orphans.items() if not within(dom.ownership.spec_file, desired.roots)}
    prunable = [name for name in orphans if options.prune_all or name not in outside]
    kept = [name for name in mine if declared.get(name, State.ABSENT) is not State.ABSENT]
    if prunable and not kept and not options.prune_all:
        listed = ", ".join(prunable[:5]) + (f" and {len(prunable) - 5} more" if len(prunable) > 5 else "")
        return joined(out + [noted(*(Note(ResourceKind.DOMAIN, name,
                            f"--prune would remove every domain of project {desired.project!r} on this host ("
                            f"{listed}) and keep none: refused, since a run given the wrong or an emptied "
                            "directory looks just like this; pass --prune-all if that is what you mean (or use "
                            "`reconcile destroy` on the specs that made them)", kind=NoteKind.REFUSED)
                                     for name in prunable))])
    for name, dom in orphans.items():
        source = dom.ownership.spec_file or "an unknown file"
        if name in prunable:
            out.append(plan_removal(dom, f"no spec mentions it any more (from {source}); pruned",
                                    dom.ownership.stop_timeout, observed))
        else:
            out.append(noted(Note(ResourceKind.DOMAIN, name,
                              f"orphaned: no spec mentions it, but it was made from {source}, which is not among "
                              "the paths this run was given; not pruned (give that file's directory, or "
                              "--prune-all to prune it anyway)", NoteKind.ORPHANED)))
    return joined(out)


def plan_removal(dom: ObservedDomain, reason: str, stop_timeout: float | None, observed: Observed) -> Planned:
    """Stop (if running), delete the volumes reconcile created for it (but those kept, those
    another disk is built on, and those another domain has), then undefine."""
    actions: list[Action] = []
    notes: list[Note] = []
    stop: tuple[str, ...] = ()
    if dom.running:
        a = Action(ActionKind.STOP, ResourceKind.DOMAIN, dom.name, f"{reason}; it is running",
                   changes=(Change(("state",), "running", "stopped"),), payload=StopDomain(stop_timeout))
        actions.append(a)
        stop = (a.id,)
    volume_ids = []
    spared = []
    backs = {v.backing: v for v in observed.volumes.values() if v.backing}
    for vol in deletable(dom):
        have = observed.volumes.get((vol.pool, vol.name))
        if have is not None and have.path in backs:  # never pull the base from under another disk
            spared.append(f"{vol.pool}/{vol.name} (the base of {backs[have.path].pool}/{backs[have.path].name})")
            continue
        others = [d for d in observed.attached.get((vol.pool, vol.name), ()) if d != dom.name]
        if others:  # never delete a disk another guest has, whoever made it
            notes.append(Note(ResourceKind.VOLUME, f"{vol.pool}/{vol.name}",
                              f"created by reconcile for {dom.name}, but now also a disk of domain "
                              f"{', '.join(others)}; not deleted with {dom.name} (delete it by hand once no domain "
                              "uses it)", kind=NoteKind.REFUSED))
            spared.append(f"{vol.pool}/{vol.name} (a disk of {', '.join(others)})")
            continue
        a = Action(ActionKind.DESTROY, ResourceKind.VOLUME, f"{vol.pool}/{vol.name}", f"created by reconcile for {dom.name}",
                   depends_on=stop, payload=DeleteVolume(vol.pool, vol.name))
        actions.append(a)
        volume_ids.append(a.id)
    kept = [f"{v.pool}/{v.name}" for v in dom.ownership.volumes if v.keep] if dom.ownership else []
    why = reason + (f"; keeps {', '.join(kept + spared)}" if kept or spared else "")
    actions.append(Action(ActionKind.DESTROY, ResourceKind.DOMAIN, dom.name, why,
                          changes=(Change(("state",), "running" if dom.running else "stopped", "absent"),),
                          depends_on=stop + tuple(volume_ids), payload=UndefineDomain(dom.uuid)))
    return Planned(tuple(actions), tuple(notes))


def deletable(dom: ObservedDomain) -> Iterable[VolumeRef]:
    if dom.ownership is None:
        return ()
    return sorted((v for v in dom.ownership.volumes if not v.keep), key=lambda v: (v.pool, v.name))
