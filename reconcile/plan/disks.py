"""Planning a domain's disks and its cloud-init seed: where an overlay's base is, what an
existing volume really is (read from its own header) against what the spec describes, what
is refused because it would lose data, and the volume actions.

Pure: no libvirt, no files, no clock.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from ..model import (Action, ActionKind, Backing, Change, ChangeClass, Disk, DomainSpec, Note, NoteKind, Observed,
                     ObservedDomain, ObservedVolume, ResourceKind)
from ..model.steps import CreateVolume, DeleteVolume, GrowVolume, OverlayBase, ReplaceVolume, WriteSeed
from ..model.units import format_size
from .context import Context
from .storage import current_version, pool_path, versions_of


@dataclasses.dataclass(frozen=True)
class Base:
    """Where an overlay's base is: the path qemu records, its format if known, what to wait for."""

    path: str
    format: str | None
    capacity: int | None
    wait: str | None = None  # the import that brings it
    missing: str = ""  # why it cannot be used
    # An image's other versions, path -> size: an existing overlay may be built on one.
    earlier: Mapping[str, int] = dataclasses.field(default_factory=dict)


def base_of(disk: Disk, ctx: Context) -> Base | None:
    """Where a disk's base is, in the form its overlay records it, or None for a plain disk."""
    desired, observed = ctx.desired, ctx.observed
    b = disk.backing
    if b is None:
        return None
    if b.kind == "path":
        for image in desired.images:  # a path where a declared image goes waits for its import
            have = observed.volumes.get((image.pool, image.name))
            where = have.path if have else f"{(pool_path(image.pool, desired, observed) or '').rstrip('/')}/{image.name}"
            if where == b.path:
                return base_of(dataclasses.replace(disk, backing=Backing("image", image.pool, image.name)), ctx)
        return Base(b.path, None, None)
    key = (b.pool, b.name)
    directory = pool_path(b.pool, desired, observed) or ""
    if b.kind == "image":
        # The declared format, checked against the content at import: libvirt's own probe
        # may lag an upload, and a base read with the wrong format is a corrupt disk.
        image = next(i for i in desired.images if (i.pool, i.name) == key)
        version = ctx.versions.get(key) or current_version(image, observed)
        have = observed.volumes.get((b.pool, version))
        path = have.path if have is not None else f"{directory.rstrip('/')}/{version}"
        # An overlay built on an earlier version of the image is as it should be: only a
        # rebuild moves it to the current one.
        earlier = {v.path: virtual_size(v) for v in versions_of(image, observed) if v.path and v.path != path}
        if ctx.waits.is_refused(ResourceKind.IMAGE, f"{b.pool}/{b.name}"):
            return Base(path, image.format, None, missing=f"its base image {b.pool}/{b.name} is refused")
        wait = next(iter(ctx.waits.on(ResourceKind.IMAGE, f"{b.pool}/{b.name}")), None)
        return Base(path, image.format, virtual_size(have) if have and not wait else None, wait=wait, earlier=earlier)
    have = observed.volumes.get(key)
    path = have.path if have is not None else f"{directory.rstrip('/')}/{b.name}"
    if have is not None:
        # Not imported by reconcile: what its own header says, else libvirt's record.
        fmt = have.head.format if have.head is not None else have.format or None
        return Base(have.path, fmt, virtual_size(have))
    return Base(path, None, None, missing=f"its backing volume {b.pool}/{b.name} does not exist; declare it under "
                 "'images' (with a source) or create it")


def virtual_size(vol: ObservedVolume) -> int:
    """The size a guest sees: a qcow2 header's own, else libvirt's record (raw: the file's)."""
    if vol.head is not None and vol.head.virtual_size is not None:
        return vol.head.virtual_size
    return vol.capacity


def wanted_size(disk: Disk, base: Base | None, vol: ObservedVolume | None = None) -> int:
    """The size a disk must have at least: the spec's, else (an overlay) its base's whole,
    the base it is built on when that is an earlier version of the image."""
    if disk.size is not None:
        return disk.size
    if base is not None and vol is not None and (on := backing_of(vol)) in base.earlier:
        return base.earlier[on]
    return base.capacity if base is not None and base.capacity else 0


def backing_of(vol: ObservedVolume) -> str | None:
    """The file an existing volume is built on, as an absolute path: what its own header
    says (libvirt's record may lag), else libvirt's record."""
    head = vol.head if vol.head is not None and vol.head.format == "qcow2" else None
    backing = head.backing if head is not None else vol.backing
    if backing and not backing.startswith("/") and vol.path:  # qemu resolves a relative name beside the overlay
        backing = os.path.normpath(os.path.join(os.path.dirname(vol.path), backing))
    return backing


def overlay_faults(disk: Disk, vol: ObservedVolume, base: Base | None) -> list[Change]:
    """How an existing volume differs from the disk the spec describes, in what cannot be
    changed in place: its format, the file it is built on, and the format it reads that
    file as. A wrong backing format means the guest reads the base's container bytes as
    its disk, so it counts as much as a wrong base."""
    out: list[Change] = []
    if vol.format and vol.format != disk.format:
        out.append(Change(("disks", disk.target, "format"), vol.format, disk.format, ChangeClass.RECREATE))
    if base is None:
        return out
    head = vol.head if vol.head is not None and vol.head.format == "qcow2" else None
    backing = backing_of(vol)
    if backing != base.path and backing not in base.earlier:
        out.append(Change(("disks", disk.target, "backing"), backing, base.path, ChangeClass.RECREATE))
    elif head is not None and base.format is not None and head.backing_format != base.format:
        out.append(Change(("disks", disk.target, "backing_format"), head.backing_format, base.format,
                          ChangeClass.RECREATE))
    return out


def volume_refusals(spec: DomainSpec, observed: Observed, bases: dict, owned: set,
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
        for fault in overlay_faults(disk, vol, base):
            leaf = fault.path[-1]
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
        size = virtual_size(vol)
        if disk.size is not None and size > disk.size:
            out.append(f"disk {disk.target}: volume {disk.pool}/{disk.volume} is {format_size(size)}, the spec says "
                       f"{format_size(disk.size)}; shrinking a disk loses data, so it is refused (set size to at least "
                       f"{format_size(size)})")
    return out, replace


def seed_action(spec: DomainSpec, observed: Observed, have: ObservedDomain | None, previously_owned: set,
                running: bool, waits: tuple[str, ...]) -> Action | Note | None:
    """Write the seed volume when it is missing or its files differ from the spec's."""
    seed = spec.seed
    label = f"{seed.pool}/{seed.volume}"
    key = (seed.pool, seed.volume)
    want = seed.file_digests()
    params = WriteSeed(seed.pool, seed.volume, seed.files)
    if key not in observed.volumes:
        return Action(ActionKind.CREATE, ResourceKind.VOLUME, label,
                      f"cloud-init seed of {spec.name}: NoCloud ISO labelled cidata, instance-id {seed.instance_id}",
                      changes=tuple(Change((name,), None, digest) for name, digest in want.items()),
                      depends_on=waits, payload=params)
    live = observed.seeds.get(key)
    got = seed.digests_of(live.files) if live is not None and live.files is not None else None
    if got == want:
        return None
    if got is None and key not in previously_owned:
        return Note(ResourceKind.VOLUME, label, f"exists and is not a cloud-init seed that reconcile wrote for "
                    f"{spec.name}; it is left alone (remove it, or give the domain another name)", kind=NoteKind.REFUSED)
    # cloud-init reads the seed when the guest boots: the volume's change is next-boot; the
    # domain's `cloud_init.instance_id` (its metadata) carries the restart that it waits for.
    nb = ChangeClass.NEXT_BOOT
    changes = [Change((name,), (got or {}).get(name), digest, nb) for name, digest in want.items()
               if (got or {}).get(name) != digest]
    changes += [Change((name,), digest, None, nb) for name, digest in (got or {}).items() if name not in want]
    if live is not None and live.instance_id != seed.instance_id:
        changes.append(Change(("instance-id",), live.instance_id, seed.instance_id, nb))
    when = ("cloud-init runs again with it at the domain's next boot" if running or have is None
            else "cloud-init runs again with it when the domain boots")
    return Action(ActionKind.UPDATE, ResourceKind.VOLUME, label,
                  f"cloud-init seed of {spec.name} {'is unreadable' if got is None else 'changed'}: rebuilt; {when}",
                  changes=tuple(changes), depends_on=waits, payload=params)


def disk_actions(spec: DomainSpec, ctx: Context, bases: dict[str, Base | None], replaced: list[Disk],
                 define_id: tuple[str, ...], live: bool) -> tuple[Action, ...]:
    """Create the volumes that are missing, replace those the spec allows replacing, grow
    those that are too small (through the domain when it runs: `live`). All after the
    domain's (re)definition, which records them as the domain's own first."""
    actions: list[Action] = []
    for disk in spec.disks:
        vol = ctx.observed.volumes.get((disk.pool, disk.volume))
        base = bases[disk.target]
        label = f"{disk.pool}/{disk.volume}"
        what = (f"{format_size(disk.size)} " if disk.size is not None else "") + disk.format
        what += (f" overlay on {base.path}" if base else "") + (", as large as its base" if disk.size is None else "")
        deps = ctx.waits.on(ResourceKind.POOL, disk.pool) + define_id + ((base.wait,) if base and base.wait else ())
        if disk in replaced:
            why = "allow_replace" if disk.allow_replace else "--allow-recreate"
            changes = [dataclasses.replace(c, path=c.path[-1:]) for c in overlay_faults(disk, vol, base)]
            gone = Action(ActionKind.DESTROY, ResourceKind.VOLUME, label,
                          f"disk {disk.target} of {spec.name}: replaced by a new {what} (recreate, {why}; its data is lost)",
                          changes=tuple(changes), depends_on=define_id, payload=ReplaceVolume(disk.pool, disk.volume))
            actions.append(gone)
            deps, vol = deps + (gone.id,), None
        if vol is None:
            changes = [Change(("size",), None, disk.size if disk.size is not None else "(of the base)"),
                       Change(("format",), None, disk.format)] + ([Change(("backing",), None, base.path)] if base else [])
            # An overlay of no size is as large as its base: known here unless the base is
            # imported in this same run, when the executor reads it from the base's header.
            size = disk.size if disk.size is not None or base is None else base.capacity or None
            create = CreateVolume(disk.pool, disk.volume, size, disk.format,
                                  OverlayBase(base.path, base.format) if base else None)
            actions.append(Action(ActionKind.CREATE, ResourceKind.VOLUME, label, f"disk {disk.target} of {spec.name}: "
                                  f"{what}", changes=tuple(changes), depends_on=deps, payload=create))
        elif virtual_size(vol) < (want_size := wanted_size(disk, base, vol)):
            when = "live: the running guest sees the new size at once" if live else "the guest sees it at its next boot"
            whole = "" if disk.size is not None else f" to the size of its base {base.path}"
            actions.append(Action(ActionKind.UPDATE, ResourceKind.VOLUME, label,
                                  f"disk {disk.target} of {spec.name}: grow in place{whole}; {when}",
                                  changes=(Change(("size",), virtual_size(vol), want_size,
                                                  ChangeClass.LIVE if live else ChangeClass.NEXT_BOOT),),
                                  depends_on=define_id,
                                  payload=GrowVolume(disk.pool, disk.volume, want_size, spec.name, disk.target)))
    return tuple(actions)


def stale_seeds(spec: DomainSpec, previously_owned: set[tuple[str, str]], define_id: tuple[str, ...]) -> tuple[Action, ...]:
    """A seed the domain no longer uses (cloud_init removed, or moved to another pool) is
    derived data: deleted once the redefined domain no longer refers to it."""
    current = (spec.seed.pool, spec.seed.volume) if spec.seed else None
    return tuple(Action(ActionKind.DESTROY, ResourceKind.VOLUME, f"{pool}/{name}",
                        f"the cloud-init seed {spec.name} no longer uses", depends_on=define_id,
                        payload=DeleteVolume(pool, name))
                 for pool, name in sorted(previously_owned)
                 if name == f"{spec.name}-cidata.iso" and (pool, name) != current)
