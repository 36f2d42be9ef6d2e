"""The run lock's storage: an inactive libvirt network named after the project."""

from __future__ import annotations

import libvirt

from ..codec.lock import holder_of, lock_xml
from .connection import Connection
from .errors import lookup, translate, wrapped


class Locks(Connection):
    # A lock is an inactive libvirt network named after the project. libvirtd refuses to
    # define a second network of the same name with another UUID, atomically, for every
    # client of the daemon: that is the mutual exclusion, and it holds across machines.
    # The holder (host, pid, since, heartbeat) is kept in the network's metadata.

    def take_lock(self, name: str, holder: dict[str, str]) -> tuple[str | None, dict[str, str]]:
        """Try once: (token, holder) when taken, else (None, the current holder)."""
        try:
            net = self.conn.networkDefineXML(lock_xml(name, holder))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_ERR_NETWORK_EXIST):
                raise translate(exc, f"take the lock {name}") from exc
            return None, self.read_lock(name) or {}
        with wrapped(f"take the lock {name}"):
            return net.UUIDString(), holder

    def read_lock(self, name: str) -> dict[str, str] | None:
        """The holder of lock `name` (with its "token"), None when nobody holds it."""
        net = lookup(lambda: self.conn.networkLookupByName(name), libvirt.VIR_ERR_NO_NETWORK, f"read the lock {name}")
        if net is None:
            return None
        try:
            xml, token = net.XMLDesc(0), net.UUIDString()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return None  # released while we looked
            raise translate(exc, f"read the lock {name}") from exc
        return dict(holder_of(xml), token=token)

    def renew_lock(self, name: str, token: str, holder: dict[str, str]) -> bool:
        """Rewrite the holder record (the heartbeat); False if the lock is no longer ours."""
        try:
            self.conn.networkLookupByUUIDString(token)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return False  # broken by someone: never bring it back
            raise translate(exc, f"renew the lock {name}") from exc
        try:
            self.conn.networkDefineXML(lock_xml(name, holder, token))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_ERR_NETWORK_EXIST):
                return False
            raise translate(exc, f"renew the lock {name}") from exc
        return True

    def drop_lock(self, name: str, token: str) -> bool:
        """Remove lock `name` if it is still the one identified by `token`."""
        try:
            net = self.conn.networkLookupByUUIDString(token)
            if net.name() != name:
                return False
            net.undefine()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return False
            raise translate(exc, f"release the lock {name}") from exc
        return True
