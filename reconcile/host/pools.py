"""Pools on the host: defined with reconcile's record, built, started and autostarted; removed,
with the directory reconcile made for them, once they hold no volume."""

from __future__ import annotations

import contextlib
import errno

import libvirt

from ..codec import storage
from ..errors import Conflict
from ..model import PoolOwner, Teardown, TeardownOutcome
from .connection import Connection
from .errors import lookup, missing_file, wrapped


class Pools(Connection):
    """Directory pools: made (with reconcile's record), started, and removed once empty."""

    def _pool(self, name: str) -> libvirt.virStoragePool | None:
        return lookup(lambda: self.conn.storagePoolLookupByName(name), libvirt.VIR_ERR_NO_STORAGE_POOL,
                      f"look up pool {name}")

    def ensure_pool(self, name: str, path: str, owner: PoolOwner | None = None) -> bool:
        """Define (with reconcile's record of `owner`), build, start and autostart a directory
        pool; False if it was all done.

        The record is in the definition from the start, saying the directory was found; the
        pool is then started as it is, and only when its directory is missing is the record
        changed to say reconcile made it, before pool-build makes it. So at every point a
        run can be killed, the record says the directory is reconcile's only if it is or is
        about to be, and a directory that was there before is never taken for reconcile's.
        """
        changed = False
        pool = self._pool(name)
        if pool is None:
            with wrapped(f"define pool {name}"):
                pool = self.conn.storagePoolDefineXML(storage.pool_xml(name, path, owner), 0)
            changed = True
        with wrapped(f"start pool {name}"):
            if not pool.isActive():
                pool = self._start_pool(pool, name, owner)
                changed = True
            if not pool.autostart():
                pool.setAutostart(1)
                changed = True
        return changed

    def _start_pool(self, pool: libvirt.virStoragePool, name: str,
                    owner: PoolOwner | None) -> libvirt.virStoragePool:
        """Start a pool; a directory pool whose directory is missing is built first (a new
        pool, a run cut short before its build, a directory removed by hand). A pool with
        this project's record then records that reconcile made the directory."""
        xml = pool.XMLDesc(0)  # an inactive pool's definition is its persistent one
        if not storage.is_dir_pool(xml):
            pool.create(0)
            return pool
        try:
            pool.create(0)
            return pool  # its directory was there
        except libvirt.libvirtError as exc:
            if not missing_file(exc):
                raise
        have = storage.pool_owner(xml)
        if owner is not None and have is not None and have.project == owner.project and not have.made_directory:
            made = PoolOwner(have.project, have.spec_file, made_directory=True)
            pool = self.conn.storagePoolDefineXML(storage.with_owner(xml, made), 0)
        pool.build(0)  # creates the directory (and its parents), nothing else, for a dir pool
        pool.create(0)
        return pool

    def remove_pool(self, name: str, project: str) -> Teardown:
        """Remove a pool this project's record says reconcile created, once it holds no
        volume: stop it, remove its directory when reconcile made it (pool-delete, which
        removes only an empty directory), undefine it. Everything is checked again first:
        the record, and the volumes after a refresh (a file copied into the directory by
        hand counts). A pool stopped by a run killed half-way is started again to look."""
        pool = self._pool(name)
        if pool is None:
            return Teardown(TeardownOutcome.GONE)
        subject = f"remove pool {name}"
        with wrapped(subject):
            owner = storage.pool_owner(pool.XMLDesc(0))
            if owner is None or owner.project != project:
                return Teardown(TeardownOutcome.NOT_OURS, owner=owner.project if owner else None)
            directory = True
            if not pool.isActive():
                try:
                    pool.create(0)
                except libvirt.libvirtError as exc:
                    if not missing_file(exc):
                        raise
                    directory = False  # nothing can be in a directory that is not there
            if directory:
                pool.refresh(0)
                held = tuple(sorted(v.name() for v in pool.listAllVolumes(0)))
                if held:
                    return Teardown(TeardownOutcome.IN_USE, users=held)
                pool.destroy()
            removed = owner.made_directory and directory
            if removed:
                try:
                    pool.delete(0)
                except libvirt.libvirtError as exc:
                    if missing_file(exc):  # removed by hand meanwhile
                        removed = False
                    elif exc.get_error_code() == libvirt.VIR_ERR_SYSTEM_ERROR and exc.get_int1() == errno.ENOTEMPTY:
                        with contextlib.suppress(libvirt.libvirtError):
                            pool.create(0)  # as it was: what holds something stays in use
                        raise Conflict(f"its directory {storage.pool_path(pool.XMLDesc(0))} is not empty any more "
                                       "(a file was put in it after the check); the pool is kept and started "
                                       "again: run the command again to check once more", subject) from exc
                    else:
                        raise
            pool.undefine()
        return Teardown(TeardownOutcome.REMOVED, directory_removed=removed)
