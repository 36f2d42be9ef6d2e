"""Volumes on the host: created, grown, imported through a stream, read back and deleted."""

from __future__ import annotations

import contextlib
import io
import os

import libvirt

from ..codec import domain as domxml
from ..codec import imagehead
from ..codec import storage
from ..errors import Conflict, InvalidRequest, NotFound
from ..model import ImageHead
from ..model.steps import OverlayBase
from .errors import lookup, translate, wrapped
from .pools import Pools


class Storage(Pools):
    """Volumes: created, grown, imported, read back and deleted (pools are `Pools`')."""

    def _volume(self, pool_name: str, name: str) -> libvirt.virStorageVol | None:
        pool = self._pool(pool_name)
        if pool is None:
            raise NotFound(f"pool {pool_name} does not exist", f"volume {pool_name}/{name}")
        return lookup(lambda: pool.storageVolLookupByName(name), libvirt.VIR_ERR_NO_STORAGE_VOL,
                      f"look up volume {pool_name}/{name}")

    def _create(self, pool_name: str, name: str, xml: str) -> libvirt.virStorageVol:
        pool = self._pool(pool_name)
        if pool is None:
            raise NotFound(f"pool {pool_name} does not exist", f"create volume {pool_name}/{name}")
        try:
            return pool.createXML(xml, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_STORAGE_VOL_EXIST:
                raise Conflict(f"a file named {name} already exists in the pool's directory but libvirt did not list "
                               f"it; it was not created by reconcile, so it is left alone (run `virsh pool-refresh "
                               f"{pool_name}` to make libvirt see it, or remove it)",
                               f"create volume {pool_name}/{name}") from exc
            raise translate(exc, f"create volume {pool_name}/{name}") from exc

    def _backing_of(self, path: str, declared: str | None, subject: str) -> tuple[str, int]:
        """Format and virtual size of the base image at `path`, from the image's own header.

        libvirt's record of a volume is what it was told when the volume was made, until the
        pool is next refreshed: a base uploaded a moment ago is recorded as an empty raw
        volume. So the format is the one the spec declares (or, for a base reconcile did not
        import, what the header says), and the size is what the header says.
        """
        try:
            vol = self.conn.storageVolLookupByPath(path)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise NotFound(f"the base image {path} is not a volume of any storage pool; put it in a pool's "
                               "directory (and refresh the pool) or declare it under 'images'", subject) from exc
            raise translate(exc, subject) from exc
        with wrapped(subject):
            head = imagehead.parse(self._download(vol, imagehead.HEAD_BYTES, imagehead.HEAD_BYTES) or b"")
            if head.unfinished:
                raise Conflict(f"the base image {path} is an import that never finished; apply again to redo it",
                               subject)
            if declared is not None and head.format != declared:
                raise InvalidRequest(f"the base image {path} holds a {head.format} image, not the {declared} the "
                                     "spec says", subject)
            size = head.virtual_size if head.virtual_size is not None else vol.info()[1]
        return head.format, size

    def create_volume(self, pool_name: str, name: str, capacity: int | None, fmt: str,
                      backing: OverlayBase | None = None) -> bool:
        """Create an empty volume, or a qcow2 overlay on `backing`.

        An overlay of no given capacity gets its base's virtual size. Its backing format is
        the one given (the image's declared format), else what the base's header says; never
        libvirt's record of the base, which may not have caught up with its content.
        """
        if self._volume(pool_name, name) is not None:
            return False
        subject = f"create volume {pool_name}/{name}"
        base = None
        if backing is not None:
            base_format = backing.format
            if base_format is None or capacity is None:  # else the plan knows both: no stream to read
                base_format, base_capacity = self._backing_of(backing.path, backing.format, subject)
                capacity = capacity if capacity is not None else base_capacity
            base = (backing.path, base_format)
        self._create(pool_name, name, storage.volume_xml(name, capacity, fmt, base))
        return True

    def grow_volume(self, pool_name: str, name: str, capacity: int, domain: str | None = None,
                    target: str | None = None) -> bool:
        """Grow a volume in place. A running domain's disk is grown through the domain (qemu
        holds the image and its lock), so the guest sees the new size at once."""
        vol = self._volume(pool_name, name)
        if vol is None:
            raise NotFound("no such volume", f"grow volume {pool_name}/{name}")
        with wrapped(f"grow volume {pool_name}/{name}"):
            current = vol.info()[1]
            if current >= capacity:
                return False
            dom = self._domain(domain) if domain else None
            if dom is not None and target and dom.isActive():
                dom.blockResize(target, capacity, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
            else:
                vol.resize(capacity, 0)
        return True

    def upload_volume(self, pool_name: str, name: str, source, fmt: str) -> bool:
        """Create a volume from a stream (`source.read(n)`, b'' at the end) through libvirt.

        Works the same for a remote host. If reading the source fails (a broken download, a
        checksum that does not match) the upload is aborted and the volume deleted, so a
        failed import leaves nothing in the pool. The content must be of format `fmt`.

        Until the whole image is in place its first `imagehead.HEAD_BYTES` hold reconcile's
        marker, and the real head is written last, in one message: an import cut short (a
        killed process, a lost connection, a failed delete) is recognisable as unfinished by
        its content, raw or qcow2, and is redone instead of being used.
        """
        if self._volume(pool_name, name) is not None:
            return False
        subject = f"import volume {pool_name}/{name}"
        size = imagehead.HEAD_BYTES
        head = b""
        while len(head) < size:
            chunk = source.read(size - len(head))
            if not chunk:
                break
            head += chunk
        found = imagehead.parse(head).format if head else "raw"
        if found != fmt:  # a qcow2 taken for raw would let a guest read host files
            raise InvalidRequest(f"the source is a {found} image, the spec says {fmt}; fix 'format' or the source",
                                 subject)
        vol = self._create(pool_name, name, storage.volume_xml(name, 0, "raw"))
        try:
            if len(head) == size:
                self._send(vol, io.BytesIO(imagehead.unfinished_marker(size)), subject, offset=0, length=size)
                self._send(vol, source, subject, offset=size)
            self._send(vol, io.BytesIO(head), subject, offset=0, length=len(head))
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                vol.delete(0)
            raise
        return True

    def read_head(self, pool_name: str, name: str) -> ImageHead | None:
        """What a volume's first bytes say of it; None when there is no such volume."""
        vol = self._volume(pool_name, name)
        if vol is None:
            return None
        with wrapped(f"read volume {pool_name}/{name}"):
            return imagehead.parse(self._download(vol, imagehead.HEAD_BYTES, imagehead.HEAD_BYTES) or b"")

    def write_volume(self, pool_name: str, name: str, data: bytes, private: bool = False) -> None:
        """Make the volume hold exactly `data` (a seed ISO): created anew at its size;
        `private`: readable by root (the daemon's user) and the hypervisor only."""
        if self._volume(pool_name, name) is not None:
            self.delete_volume(pool_name, name)
        vol = self._create(pool_name, name, storage.volume_xml(name, len(data), "raw", private=private))
        try:
            self._send(vol, io.BytesIO(data), f"write volume {pool_name}/{name}")
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                vol.delete(0)
            raise

    def write_in_place(self, pool_name: str, name: str, data: bytes) -> None:
        """Overwrite a small volume of the same size in one message (an image's record), so
        that it holds the old content or the new, never none; create it when missing."""
        vol = self._volume(pool_name, name)
        if vol is None or vol.info()[1] != len(data):
            self.write_volume(pool_name, name, data)
            return
        self._send(vol, io.BytesIO(data), f"write volume {pool_name}/{name}", offset=0, length=len(data))

    def users_of(self, pool_name: str, name: str, path: str) -> list[str]:
        """What on the host is, or may be, built on a volume (its file at `path`): every
        volume of every pool whose backing file it is, every domain with it as a disk, and
        what cannot be read and so may be: a pool that is not active or cannot be refreshed
        (a file made beside libvirt, with qemu-img, is listed only after a refresh), and a
        domain disk in no pool (what it is built on is not known). Read whole, whoever
        manages them: an image version is deleted only when this is empty."""
        conn = self.conn
        users = []
        calls = {}
        with wrapped("read the host"):
            active = {p.name() for p in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)}
            for pool in conn.listAllStoragePools(0):
                if pool.name() not in active:
                    users.append(f"pool {pool.name()} (not active: its volumes cannot be read)")
                    continue
                try:
                    pool.refresh(0)
                except libvirt.libvirtError as exc:
                    users.append(f"pool {pool.name()} (not refreshed: {exc.get_error_message()})")
                    continue
                for vol in _gone_ok(pool.listAllVolumes, 0) or ():
                    calls[("volume", pool.name(), vol.name())] = (vol.XMLDesc, 0)
            for dom in conn.listAllDomains(0):
                calls[("domain", dom.name())] = (dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)
        read = {key: xml for key, xml in self._reads(calls).items()
                if not isinstance(xml, libvirt.libvirtError)}  # what is gone was deleted while we looked
        in_pools = set()
        for key, xml in read.items():
            if key[0] != "volume":
                continue
            vol = storage.observed_volume(key[1], key[2], xml)
            in_pools.add(vol.path)
            backing = vol.backing
            if backing and not backing.startswith("/") and vol.path:  # qemu reads it beside the overlay
                backing = os.path.normpath(os.path.join(os.path.dirname(vol.path), backing))
            if backing == path:
                users.append(f"volume {key[1]}/{key[2]}")
        for key, xml in read.items():
            if key[0] != "domain":
                continue
            files, volumes = domxml.disk_sources(xml)
            if path in files or (pool_name, name) in volumes:
                users.append(f"domain {key[1]}")
            elif outside := sorted(f for f in files if f not in in_pools):
                users.append(f"domain {key[1]} (its disk {outside[0]} is in no pool: its base cannot be read)")
        return sorted(users)

    def read_volume(self, pool_name: str, name: str, limit: int) -> bytes | None:
        """The whole content of a small volume; None if it is missing or larger than `limit`."""
        vol = self._volume(pool_name, name)
        if vol is None:
            return None
        with wrapped(f"read volume {pool_name}/{name}"):
            return self._download(vol, vol.info()[1], limit)

    def delete_volume(self, pool_name: str, name: str) -> bool:
        if self._pool(pool_name) is None:
            return False
        vol = self._volume(pool_name, name)
        if vol is None:
            return False
        try:
            vol.delete(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return False
            raise translate(exc, f"delete volume {pool_name}/{name}") from exc
        return True


# Reads in flight at once (see LibvirtHost._reads): libvirtd serves at most five calls of


def _gone_ok(call, *args):
    """`call(*args)`, or None for a pool stopped or removed meanwhile."""
    try:
        return call(*args)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_ERR_OPERATION_INVALID):
            return None
        raise
