"""One runner per kind of step: what the executor does for each typed payload, through the
`Host` protocol. Each re-checks first, so an action whose work is already done ends as
UNCHANGED, and a re-run after a crash converges.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple, Protocol

from ..codec import imageversions, seed
from ..model import (DEFAULT_STOP_TIMEOUT, Action, ActionKind, HostEntry, ImageHead, ImageRecord, PoolOwner,
                     SourceStamp, Status, Teardown, TeardownOutcome)
from ..model.steps import (CreateVolume, DefineDomain, DeleteVersion, DeleteVolume, EnsureNetwork, EnsurePool,
                           GrowVolume, ImportImage, LiveChange, OverlayBase, RecordImage, RecreateVolume,
                           RemoveNetwork, RemovePool, ReplaceVolume, StartDomain, Step, StopDomain, UndefineDomain,
                           UpdateNetworkHosts, WriteRecord, WriteSeed)
from . import sources


class Host(Protocol):
    def define_domain(self, name: str, xml: str, autostart: bool) -> None: ...
    def domain_exists(self, name: str) -> bool: ...
    def start_domain(self, name: str) -> bool: ...
    def record_state(self, name: str, state: str) -> None: ...
    def set_owner(self, name: str, owner_xml: str) -> None: ...
    def stop_domain(self, name: str, timeout: float, force: bool = False) -> str: ...
    def undefine_domain(self, name: str) -> bool: ...
    def apply_live(self, name: str, changes: tuple[LiveChange, ...]) -> list[str]: ...
    def ensure_pool(self, name: str, path: str, owner: PoolOwner | None = None) -> bool: ...
    def remove_pool(self, name: str, project: str) -> Teardown: ...
    def ensure_network(self, name: str, xml: str) -> bool: ...
    def remove_network(self, name: str, project: str) -> Teardown: ...
    def update_network_hosts(self, name: str, add: tuple[HostEntry, ...], remove: tuple[HostEntry, ...]) -> bool: ...
    def read_head(self, pool_name: str, name: str) -> ImageHead | None: ...
    def create_volume(self, pool_name: str, name: str, capacity: int | None, fmt: str,
                      backing: OverlayBase | None = None) -> bool: ...
    def grow_volume(self, pool_name: str, name: str, capacity: int, domain: str | None = None,
                    target: str | None = None) -> bool: ...
    def delete_volume(self, pool_name: str, name: str) -> bool: ...
    def upload_volume(self, pool_name: str, name: str, source, fmt: str) -> bool: ...
    def write_volume(self, pool_name: str, name: str, data: bytes, private: bool = False) -> None: ...
    def read_volume(self, pool_name: str, name: str, limit: int) -> bytes | None: ...
    def write_in_place(self, pool_name: str, name: str, data: bytes) -> None: ...
    def users_of(self, pool_name: str, name: str, path: str) -> list[str]: ...


class Done(NamedTuple):
    """What running a step gave: its status, a message for people, and for a stop a
    stable word for machines ("graceful", "forced", "already stopped")."""

    status: Status
    message: str = ""
    outcome: str = ""


def applied(changed: bool, message: str = "", unchanged: str = "") -> Done:
    return Done(Status.APPLIED, message) if changed else Done(Status.UNCHANGED, unchanged)


def describe_stop(how: str, timeout: float, force: bool) -> str:
    """How a stop ended, in words; starts with the outcome ("graceful"/"forced")."""
    if how == "graceful":
        return "graceful: shut down after the ACPI power-button press"
    if how == "forced":
        if force:
            return "forced: powered off at once (--force)"
        if timeout <= 0:
            return "forced: powered off at once (stop_timeout is 0)"
        return f"forced: still running {timeout:g}s after the ACPI power-button press, so powered off"
    return how


def _pool(host: Host, action: Action, step: EnsurePool, force: bool) -> Done:
    return applied(host.ensure_pool(step.name, step.path, step.owner), unchanged="already exists and is active")


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _teardown(found: Teardown, held: str, removed: str) -> Done:
    """How a removal ended: a pool or network found in use or no longer this project's is
    left alone (unchanged: the host keeps what it has), and the message says why."""
    if found.outcome is TeardownOutcome.GONE:
        return Done(Status.UNCHANGED, "already gone")
    if found.outcome is TeardownOutcome.NOT_OURS:
        whose = f"project {found.owner}'s" if found.owner else "not reconcile's"
        return Done(Status.UNCHANGED, f"kept: its record now says it is {whose}")
    if found.outcome is TeardownOutcome.IN_USE:
        return Done(Status.UNCHANGED, f"kept: {held} {_listed(found.users)}")
    return Done(Status.APPLIED, removed)


def _remove_pool(host: Host, action: Action, step: RemovePool, force: bool) -> Done:
    found = host.remove_pool(step.name, step.project)
    return _teardown(found, "it holds", "with its directory" if found.directory_removed else "")


def _remove_network(host: Host, action: Action, step: RemoveNetwork, force: bool) -> Done:
    return _teardown(host.remove_network(step.name, step.project), "in use by domain", "")


def _network(host: Host, action: Action, step: EnsureNetwork, force: bool) -> Done:
    return applied(host.ensure_network(step.name, step.xml), unchanged="already exists, active and autostarted")


def _network_hosts(host: Host, action: Action, step: UpdateNetworkHosts, force: bool) -> Done:
    return applied(host.update_network_hosts(step.name, step.add, step.remove), unchanged="already as planned")


def _image(host: Host, action: Action, step: ImportImage, force: bool) -> Done:
    head = host.read_head(step.pool, step.name)
    if head is not None and not head.unfinished:
        return Done(Status.UNCHANGED, "already imported")
    if head is not None:  # reconcile's own marker: an import of ours that never finished
        host.delete_volume(step.pool, step.name)
    record = imageversions.record_volume(step.image) if step.image else ""
    before = _read_record(host, step.pool, record) if record else None
    if record and (before is None or step.name not in before.versions):
        # listed as reconcile's before it exists: an import killed half-way is never left nobody's
        listed = before or ImageRecord(step.name, SourceStamp())
        host.write_in_place(step.pool, record, imageversions.encode(
            dataclasses.replace(listed, versions=listed.versions + (step.name,))))
    try:
        with sources.ImageSource(step.source, step.sha256) as src:
            changed = host.upload_volume(step.pool, step.name, src, step.format)
            size, stamp = src.done, src.stamp()
    except BaseException:
        if record:  # a failed import leaves the pool as it was: the record too
            if before is None:
                host.delete_volume(step.pool, record)
            else:
                host.write_in_place(step.pool, record, imageversions.encode(before))
        raise
    if changed and record:
        _record(host, step.pool, record, step.name, stamp)
    redone = "; the unfinished earlier import was removed first" if head is not None else ""
    return applied(changed, f"{size} bytes" + (", sha256 verified" if step.sha256 else "") + redone,
                   "already imported")


def _read_record(host: Host, pool: str, record: str) -> ImageRecord | None:
    return imageversions.decode(host.read_volume(pool, record, imageversions.MAX_RECORD_BYTES))


def _record(host: Host, pool: str, record: str, current: str, stamp: SourceStamp,
            have: ImageRecord | None = None) -> None:
    """Record `current` as the image's current version, among the versions it already lists."""
    have = have if have is not None else _read_record(host, pool, record)
    known = have.versions if have is not None else ()
    host.write_in_place(pool, record, imageversions.encode(ImageRecord(current, stamp, known)))


def _record_image(host: Host, action: Action, step: RecordImage, force: bool) -> Done:
    have = _read_record(host, step.pool, step.name)
    if have is not None and have.current == step.current:
        return Done(Status.UNCHANGED, f"already records {step.current}")
    _record(host, step.pool, step.name, step.current, step.stamp, have)
    return Done(Status.APPLIED, f"current version: {step.current}")


def _delete_version(host: Host, action: Action, step: DeleteVersion, force: bool) -> Done:
    """An old version goes only when nothing on the host is built on it any more: another
    project may have built an overlay on it since the plan was made."""
    users = host.users_of(step.pool, step.name, step.path)
    if users:
        shown = ", ".join(users[:3]) + (f" and {len(users) - 3} more" if len(users) > 3 else "")
        return Done(Status.UNCHANGED, f"kept: still the base of {shown}")
    gone = host.delete_volume(step.pool, step.name)
    have = _read_record(host, step.pool, step.record) if step.record else None
    if have is not None and step.name in have.versions:
        host.write_in_place(step.pool, step.record, imageversions.encode(dataclasses.replace(
            have, versions=tuple(v for v in have.versions if v != step.name))))
    return applied(gone, "no overlay is built on it any more", "already gone")


def _create_volume(host: Host, action: Action, step: CreateVolume, force: bool) -> Done:
    return applied(host.create_volume(step.pool, step.name, step.capacity, step.format, step.backing),
                   unchanged="already exists")


def _grow_volume(host: Host, action: Action, step: GrowVolume, force: bool) -> Done:
    return applied(host.grow_volume(step.pool, step.name, step.capacity, step.domain, step.target), "grown",
                   "already large enough")


def _delete_volume(host: Host, action: Action, step: DeleteVolume | ReplaceVolume, force: bool) -> Done:
    return applied(host.delete_volume(step.pool, step.name), unchanged="already gone")


def _recreate_volume(host: Host, action: Action, step: RecreateVolume, force: bool) -> Done:
    """A rebuild's disk, always made anew: an overlay left by a run cut short may already be
    fresh or not, and nothing tells them apart; a new one is instant either way."""
    host.delete_volume(step.pool, step.name)
    host.create_volume(step.pool, step.name, step.capacity, step.format, step.backing)
    return Done(Status.APPLIED, "fresh overlay" if step.backing else "created empty")


def _write_record(host: Host, action: Action, step: WriteRecord, force: bool) -> Done:
    host.set_owner(action.name, step.owner_xml)
    return Done(Status.APPLIED, "recorded as begun" if action.kind is ActionKind.RESET else "recorded as done")


def _write_seed(host: Host, action: Action, step: WriteSeed, force: bool) -> Done:
    """Build and upload the seed ISO, unless the volume already holds exactly these files."""
    current = host.read_volume(step.pool, step.name, seed.MAX_SEED_BYTES)
    if current is not None and seed.read_iso(current) == dict(step.files):
        return Done(Status.UNCHANGED, "already holds these files")
    data = seed.build_iso(step.files)
    host.write_volume(step.pool, step.name, data, private=True)  # it may hold secrets
    return Done(Status.APPLIED, f"{len(data) // 1024} KiB")


def _define(host: Host, action: Action, step: DefineDomain, force: bool) -> Done:
    if action.kind is ActionKind.CREATE and host.domain_exists(action.name):
        return Done(Status.UNCHANGED, "already defined")
    host.define_domain(action.name, step.xml, step.autostart)
    done = host.apply_live(action.name, step.live) if step.live else []
    return Done(Status.APPLIED, "; ".join(done))


def _start(host: Host, action: Action, step: StartDomain, force: bool) -> Done:
    changed = host.start_domain(action.name)
    host.record_state(action.name, "running")
    return applied(changed, unchanged="already running")


def _stop(host: Host, action: Action, step: StopDomain, force: bool) -> Done:
    timeout = DEFAULT_STOP_TIMEOUT if step.stop_timeout is None else step.stop_timeout
    how = host.stop_domain(action.name, timeout, force)
    host.record_state(action.name, "stopped")
    if how == "already stopped":
        return Done(Status.UNCHANGED, how, how)
    return Done(Status.APPLIED, describe_stop(how, timeout, force), how)


def _undefine(host: Host, action: Action, step: UndefineDomain, force: bool) -> Done:
    return applied(host.undefine_domain(action.name), unchanged="already gone")


RUNNERS: dict[type[Step], Callable[[Host, Action, Step, bool], Done]] = {
    EnsurePool: _pool, EnsureNetwork: _network, UpdateNetworkHosts: _network_hosts, ImportImage: _image, CreateVolume: _create_volume,
    GrowVolume: _grow_volume, DeleteVolume: _delete_volume, ReplaceVolume: _delete_volume, WriteSeed: _write_seed,
    DefineDomain: _define, StartDomain: _start, StopDomain: _stop, UndefineDomain: _undefine,
    RecreateVolume: _recreate_volume, WriteRecord: _write_record, RecordImage: _record_image,
    DeleteVersion: _delete_version, RemovePool: _remove_pool, RemoveNetwork: _remove_network,
}


def run_action(host: Host, action: Action, force: bool = False) -> Done:
    """Do one action; UNCHANGED when the re-check finds it done."""
    runner = RUNNERS.get(type(action.payload))
    if runner is None:
        raise ValueError(f"no runner for {action.id} ({type(action.payload).__name__})")
    return runner(host, action, action.payload, force)
