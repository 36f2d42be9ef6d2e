"""A rebuild's newest base images: which image sources changed, the new versions to import
beside the old, and the old versions nothing is built on any more.

An image version is never deleted while an overlay on the host (of any project) or a
domain's disk is built on it; the executor checks the whole host again right before.
New versions are imported before the overlays that go on them, and old ones are deleted
only after every reset of the run, so an overlay never points at a missing base.

Pure: no libvirt, no files, no clock: what the sources say now is read before planning
(`apply.sources.probe`) and given as stamps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..codec import imageversions
from ..model import (Action, ActionKind, Change, ImageSpec, Note, NoteKind, Observed, ResourceKind,
                     SourceStamp, shown_source)
from ..model.observed import version_volume
from ..model.steps import DeleteVersion, ImportImage, RecordImage, RecreateVolume
from .context import Planned, Waits
from .disks import backing_of
from .storage import current_version, versions_of


def plan_refresh(observed: Observed, images: Iterable[ImageSpec],
                 stamps: Mapping[str, SourceStamp | str]) -> tuple[Planned, Waits, dict[tuple[str, str], str]]:
    """For each image to refresh, by what its source says now (a stamp, or why it could not
    be read): nothing, a new version imported, or a version already imported recorded as
    current. Returns the actions, what an overlay on each waits for, and the version each
    image's fresh overlays go on."""
    actions: list[Action] = []
    notes: list[Note] = []
    made: dict[tuple[ResourceKind, str], str] = {}
    versions: dict[tuple[str, str], str] = {}
    for image in images:
        key, label = (image.pool, image.name), f"{image.pool}/{image.name}"
        current = current_version(image, observed)
        have = observed.volumes.get((image.pool, current))
        stamp = stamps.get(image.name)
        record = observed.images.get(key)
        if have is None or (have.head is not None and have.head.unfinished):
            continue  # apply imports it first; the rebuild of what is built on it is refused
        if stamp is None:
            continue
        if isinstance(stamp, str):
            notes.append(Note(ResourceKind.IMAGE, label, f"not refreshed: {stamp}; the rebuilt overlays are built on "
                              f"the current version {current}", NoteKind.REFUSED))
            continue
        if record is not None and record.stamp.same_source(stamp):
            notes.append(Note(ResourceKind.IMAGE, label, f"source unchanged ({_how(stamp)}): not imported again; "
                              f"the current version is {current}"))
            continue
        version = version_volume(image.name, stamp.version)
        vol = observed.volumes.get((image.pool, version))
        since = (f"its source changed since {current} was imported ({_what_changed(record.stamp, stamp)})"
                 if record is not None else
                 f"no record says what {current} was imported from (imported by an earlier reconcile)")
        versions[key] = version
        if vol is not None and not (vol.head is not None and vol.head.unfinished):
            if version == current:
                continue
            a = Action(ActionKind.UPDATE, ResourceKind.IMAGE, label,
                       f"{since}; version {version} is already in the pool (an import cut short before its record "
                       "was written): recorded as the current version",
                       changes=(Change(("current",), current, version),),
                       payload=RecordImage(image.pool, imageversions.record_volume(image.name), version, stamp))
        else:
            source = shown_source(image.source)
            a = Action(ActionKind.CREATE, ResourceKind.IMAGE, label,
                       f"{since}; the new version is imported from {source} as {version}, beside {current}, and "
                       "the rebuilt overlays are built on it",
                       changes=(Change(("current",), current, version),),
                       payload=ImportImage(image.pool, version, image.source, image.format,
                                           stamp.sha256 or image.sha256, image=image.name))
        actions.append(a)
        made[(ResourceKind.IMAGE, label)] = a.id
    return Planned(tuple(actions), tuple(notes)), Waits(made), versions


def plan_old_versions(observed: Observed, images: Iterable[ImageSpec],
                      versions: Mapping[tuple[str, str], str], resets: Iterable[Action],
                      after: tuple[str, ...]) -> Planned:
    """The versions of the refreshed images that nothing is built on once the run's
    `resets` are done: deleted last (after `after`); the others kept, with who needs them."""
    fresh_on: dict[tuple[str, str], str] = {}  # a volume this run makes anew -> the base it goes on
    for a in resets:
        if isinstance(a.payload, RecreateVolume) and a.payload.backing is not None:
            fresh_on[(a.payload.pool, a.payload.name)] = a.payload.backing.path
    users = _users(observed)
    actions: list[Action] = []
    notes: list[Note] = []
    for image in images:
        key = (image.pool, image.name)
        keep = versions.get(key) or current_version(image, observed)
        record = observed.images.get(key)
        ours = set(record.versions) if record is not None else set()
        for vol in sorted(versions_of(image, observed), key=lambda v: v.name):
            if vol.name == keep or not vol.path or vol.name not in ours:
                continue  # the current one, or not a version reconcile imported
            label = f"{image.pool}/{vol.name}"
            still = sorted(u for u in users.get(vol.path, ()) if u not in fresh_on or fresh_on[u] == vol.path)
            still_domains = sorted(observed.attached.get((vol.pool, vol.name), ()))
            if still or still_domains:
                who = [f"volume {p}/{n}" for p, n in still] + [f"domain {d}" for d in still_domains]
                shown = ", ".join(who[:3]) + (f" and {len(who) - 3} more" if len(who) > 3 else "")
                notes.append(Note(ResourceKind.IMAGE, label, f"an earlier version of image {image.name}, kept: "
                                  f"{shown} is built on it"))
                continue
            actions.append(Action(ActionKind.DESTROY, ResourceKind.IMAGE, label,
                                  f"an earlier version of image {image.name} that nothing on the host is built on "
                                  "once the rebuild is done (checked again right before it is deleted)",
                                  # one after another: each refreshes every pool, which fails
                                  # while a volume of it is being deleted, and rewrites the record
                                  depends_on=after + tuple(a.id for a in actions[-1:]),
                                  payload=DeleteVersion(image.pool, vol.name, vol.path,
                                                        imageversions.record_volume(image.name))))
    return Planned(tuple(actions), tuple(notes))


def _users(observed: Observed) -> dict[str, list[tuple[str, str]]]:
    """The volumes built on each file, by the file's path (every volume of the host is
    observed when images are refreshed)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for vol in observed.volumes.values():
        if backing := backing_of(vol):
            out.setdefault(backing, []).append((vol.pool, vol.name))
    return out


def _how(stamp: SourceStamp) -> str:
    if stamp.etag:
        return f"ETag {stamp.etag}"
    if stamp.last_modified and not stamp.sha256:
        return f"Last-Modified {stamp.last_modified}"
    return f"sha256 {stamp.sha256[:12]}" if stamp.sha256 else "as recorded"


def _what_changed(before: SourceStamp, now: SourceStamp) -> str:
    if before.sha256 and now.sha256:
        return f"sha256 {before.sha256[:12]} -> {now.sha256[:12]}"
    if before.etag and now.etag:
        return f"ETag {before.etag} -> {now.etag}"
    if before.last_modified and now.last_modified:
        return f"Last-Modified {before.last_modified} -> {now.last_modified}"
    return "what the source says of itself is not what was recorded"
