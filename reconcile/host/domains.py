"""Domains on the host: define, change live, start, stop gracefully then by force, undefine."""

from __future__ import annotations

import time

import libvirt

from ..codec import domain as domxml
from ..codec import ownership
from ..errors import NotFound
from ..model.steps import ChangeMedia, LiveChange, SetMemory, SetVcpus
from .connection import Connection
from .errors import lookup, wrapped

_UNDEFINE_FLAGS_BASIC = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
_UNDEFINE_FLAGS = (_UNDEFINE_FLAGS_BASIC | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                   | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA", 0))


class Domains(Connection):

    def _domain(self, name: str) -> libvirt.virDomain | None:
        return lookup(lambda: self.conn.lookupByName(name), libvirt.VIR_ERR_NO_DOMAIN, f"look up domain {name}")

    def domain_exists(self, name: str) -> bool:
        return self._domain(name) is not None

    def domain_running(self, name: str) -> bool:
        dom = self._domain(name)
        with wrapped(f"read state of domain {name}"):
            return bool(dom and dom.isActive())

    def define_domain(self, name: str, xml: str, autostart: bool) -> None:
        with wrapped(f"define domain {name}"):
            dom = self.conn.defineXML(xml)
        with wrapped(f"set autostart of domain {name}"):
            if bool(dom.autostart()) != autostart:
                dom.setAutostart(1 if autostart else 0)

    def apply_live(self, name: str, changes: tuple[LiveChange, ...]) -> list[str]:
        """Apply live-class changes to a running domain; says what it did (nothing if it is off)."""
        dom = self._domain(name)
        done: list[str] = []
        if dom is None:
            raise NotFound("no such domain", f"change running domain {name}")
        live = libvirt.VIR_DOMAIN_AFFECT_LIVE
        with wrapped(f"change running domain {name}"):
            if not dom.isActive():
                return done
            for change in changes:
                if isinstance(change, SetVcpus):
                    dom.setVcpusFlags(change.count, live)
                    done.append(f"{change.count} vcpus plugged in")
                elif isinstance(change, SetMemory):
                    dom.setMemoryFlags(change.kib, live)
                    done.append(f"balloon set to {change.kib} KiB")
                elif isinstance(change, ChangeMedia):
                    device = domxml.cdrom_with_media(dom.XMLDesc(0), change.target, change.path)
                    if device is not None:
                        dom.updateDeviceFlags(device, live)
                        done.append(f"media in {change.target} changed")
        return done

    def record_state(self, name: str, state: str) -> None:
        """Write the state a start or stop reached into reconcile's metadata of the domain
        (its persistent config), so drift is told from a start that never happened."""
        dom = self._domain(name)
        if dom is None:
            return
        config = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        with wrapped(f"record the state of domain {name}"):
            try:
                current = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, ownership.NAMESPACE, config)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                    return
                raise
            updated = ownership.with_applied_state(current, state)
            if updated is not None:
                dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, updated, ownership.PREFIX, ownership.NAMESPACE, config)

    def set_owner(self, name: str, owner_xml: str) -> None:
        """Write reconcile's metadata record of a domain (its persistent config) as given."""
        dom = self._domain(name)
        if dom is None:
            raise NotFound("no such domain", f"record a rebuild of domain {name}")
        with wrapped(f"record a rebuild of domain {name}"):
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, owner_xml, ownership.PREFIX, ownership.NAMESPACE,
                            libvirt.VIR_DOMAIN_AFFECT_CONFIG)

    def start_domain(self, name: str) -> bool:
        dom = self._domain(name)
        if dom is None:
            raise NotFound("no such domain", f"start domain {name}")
        with wrapped(f"start domain {name}"):
            if dom.isActive():
                return False
            dom.create()
        return True

    def stop_domain(self, name: str, timeout: float, force: bool = False) -> str:
        """Shut down by ACPI, force off after `timeout` seconds; says how it ended.

        Returns "already stopped", "graceful" or "forced". A domain that goes down on its
        own at the very moment we force it counts as graceful, not as an error.
        """
        dom = self._domain(name)
        if dom is None:
            return "already stopped"
        with wrapped(f"stop domain {name}"):
            if not dom.isActive():
                return "already stopped"
            if not force and timeout > 0:
                try:
                    dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() == libvirt.VIR_ERR_INVALID_ARG:
                        dom.shutdown()  # drivers without the ACPI flag pick their own method
                    elif exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                        raise
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    if not _active(dom):
                        return "graceful"
                    time.sleep(0.2)
            try:
                dom.destroy()
            except libvirt.libvirtError as exc:
                # It went down on its own between the last look and the power-off (a
                # transient domain is gone altogether, which `_active` reads as stopped).
                codes = (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID)
                if exc.get_error_code() in codes and not _active(dom):
                    return "graceful" if not force and timeout > 0 else "already stopped"
                raise
        return "forced"

    def undefine_domain(self, name: str) -> bool:
        dom = self._domain(name)
        if dom is None:
            return False
        with wrapped(f"undefine domain {name}"):
            if dom.isActive():
                dom.destroy()
            # Drivers that know no NVRAM or checkpoints refuse those flags; fewer will do there.
            for flags in (_UNDEFINE_FLAGS, _UNDEFINE_FLAGS_BASIC, 0):
                try:
                    dom.undefineFlags(flags)
                    return True
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                        return False
                    if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG or flags == 0:
                        raise
        return True


def _active(dom: libvirt.virDomain) -> bool:
    """Whether a domain runs; a transient one that vanished has stopped."""
    try:
        return bool(dom.isActive())
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise
