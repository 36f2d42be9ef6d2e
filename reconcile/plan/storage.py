"""Planning pools and images: what volumes wait for, and what the plan refuses of them.

Pure: no libvirt, no files, no clock.
"""

from __future__ import annotations

import os

from ..model import (Action, ActionKind, Change, Desired, ImageSpec, Note, NoteKind, Observed, ObservedVolume,
                     PoolOwner, ResourceKind, shown_source)
from ..model.steps import EnsurePool, ImportImage
from .context import Planned, Waits


def plan_pools(desired: Desired, observed: Observed) -> tuple[Planned, Waits]:
    """Pools are created (with reconcile's record of this project, then built, started,
    autostarted) or started when missing; never moved (their removal is `teardown`'s).
    Returns what a volume in each must wait for."""
    actions: list[Action] = []
    notes: list[Note] = []
    made: dict[tuple[ResourceKind, str], str] = {}
    refused: set[tuple[ResourceKind, str]] = set()
    for pool in desired.pools:
        have = observed.pools.get(pool.name)
        owner = PoolOwner(desired.project, desired.absolute(pool.origin.file))
        clash = sorted(p.name for p in observed.pools.values()
                       if have is None and p.path and os.path.normpath(p.path) == os.path.normpath(pool.path))
        if clash:
            notes.append(Note(ResourceKind.POOL, pool.name, f"its path {pool.path} is already the directory of pool "
                              f"{', '.join(clash)} on the host; two pools over one directory see each other's "
                              f"volumes, so it is not created (use pool {clash[0]!r}, or another path)", kind=NoteKind.REFUSED))
            refused.add((ResourceKind.POOL, pool.name))
            continue
        if have is None:
            a = Action(ActionKind.CREATE, ResourceKind.POOL, pool.name, f"not on the host; directory pool at {pool.path}",
                       changes=(Change(("path",), None, pool.path),), payload=EnsurePool(pool.name, pool.path, owner))
            actions.append(a)
            made[(ResourceKind.POOL, pool.name)] = a.id
        elif not have.active:
            a = Action(ActionKind.START, ResourceKind.POOL, pool.name, "defined but not active",
                       payload=EnsurePool(pool.name, pool.path, owner))
            actions.append(a)
            made[(ResourceKind.POOL, pool.name)] = a.id
        elif have.path and have.path != pool.path:
            notes.append(Note(ResourceKind.POOL, pool.name, f"exists at {have.path}, not {pool.path}; used as it is "
                              "(a pool is never moved: its volumes would be left behind)", kind=NoteKind.WARNING))
        else:
            notes.append(Note(ResourceKind.POOL, pool.name, "exists and is active"))
    return Planned(tuple(actions), tuple(notes)), Waits(made, frozenset(refused))


def plan_images(desired: Desired, observed: Observed, pools: Waits) -> tuple[Planned, Waits]:
    """Imports of images not yet in their pool (or whose import never finished); returns
    what an overlay on each must wait for. An image is never deleted here: any number of
    overlays, of any project, may be built on it (a rebuild's refresh deletes an earlier
    version, see `refresh`)."""
    actions: list[Action] = []
    notes: list[Note] = []
    made: dict[tuple[ResourceKind, str], str] = {}
    refused: set[tuple[ResourceKind, str]] = set()
    declared_pools = {p.name for p in desired.pools}
    for image in desired.images:
        label = f"{image.pool}/{image.name}"
        if pools.is_refused(ResourceKind.POOL, image.pool):
            notes.append(Note(ResourceKind.IMAGE, label, f"its pool {image.pool!r} is refused", kind=NoteKind.REFUSED))
            refused.add((ResourceKind.IMAGE, label))
            continue
        if image.pool not in observed.pools and image.pool not in declared_pools:
            notes.append(Note(ResourceKind.IMAGE, label, f"pool {image.pool!r} neither exists on the host nor is "
                              "declared in the specs; declare it under 'pools'", kind=NoteKind.REFUSED))
            refused.add((ResourceKind.IMAGE, label))
            continue
        current = current_version(image, observed)
        have = observed.volumes.get((image.pool, current))
        redo = have is not None and have.head is not None and have.head.unfinished
        if have is not None and not redo and have.content_format not in (None, image.format):
            notes.append(Note(ResourceKind.IMAGE, label, f"the volume exists but holds no {image.format} image (an "
                              "import cut short leaves this, as does a volume of that name made by hand); it is "
                              f"not used as a base: delete it (virsh vol-delete --pool {image.pool} {image.name}) "
                              "and apply again", kind=NoteKind.REFUSED))
            refused.add((ResourceKind.IMAGE, label))
            continue
        if have is not None and not redo:
            which = f" (current version {current})" if current != image.name else ""
            notes.append(Note(ResourceKind.IMAGE, label, f"imported{which}; its source is checked again only by "
                              "`reconcile rebuild` when the image says refresh: true (or with --refresh-images)"))
            continue
        checked = "; its sha256 is verified" if image.sha256 else ""
        source = shown_source(image.source)
        changes = [Change(("source",), None, source), Change(("format",), None, image.format)]
        if image.sha256:
            changes.append(Change(("sha256",), None, image.sha256))
        why = ("an earlier import never finished (the volume still holds reconcile's unfinished-import marker); "
               "it is removed and imported again" if redo else "not in the pool")
        a = Action(ActionKind.CREATE, ResourceKind.IMAGE, label, f"{why}; imported from {source}{checked}",
                   changes=tuple(changes), depends_on=pools.on(ResourceKind.POOL, image.pool),
                   payload=ImportImage(image.pool, current, image.source, image.format, image.sha256, image=image.name))
        actions.append(a)
        made[(ResourceKind.IMAGE, label)] = a.id
    return Planned(tuple(actions), tuple(notes)), Waits(made, frozenset(refused))


def current_version(image: ImageSpec, observed: Observed) -> str:
    """The volume new overlays on an image are built on: the version its record names,
    while that volume is there, else the image's own."""
    record = observed.images.get((image.pool, image.name))
    if record is not None and record.current != image.name and (image.pool, record.current) in observed.volumes:
        return record.current
    return image.name


def versions_of(image: ImageSpec, observed: Observed) -> list[ObservedVolume]:
    """Every version of the image in its pool (its own volume included), as observed; none
    for an image without a record (only a refresh makes versions, and it writes the record
    before any overlay is built on one)."""
    return list(observed.versions.get((image.pool, image.name), ()))


def pool_path(pool: str, desired: Desired, observed: Observed) -> str | None:
    have = observed.pools.get(pool)
    if have is not None and have.path:
        return have.path
    return next((p.path for p in desired.pools if p.name == pool), None)
