"""Networks on the host: created, started and marked autostart when missing; their DHCP
reservations and DNS names updated live."""

from __future__ import annotations

import libvirt

from ..codec import network as netxml
from ..errors import NotFound
from ..model import HostEntry
from .connection import Connection
from .errors import lookup, wrapped


class Networks(Connection):

    def ensure_network(self, name: str, xml: str) -> bool:
        """Define (if missing), start and mark autostart a network; False if it was all done."""
        changed = False
        net = lookup(lambda: self.conn.networkLookupByName(name), libvirt.VIR_ERR_NO_NETWORK, f"look up network {name}")
        if net is None:
            with wrapped(f"define network {name}"):
                net = self.conn.networkDefineXML(xml)
            changed = True
        with wrapped(f"start network {name}"):
            if not net.isActive():
                net.create()
                changed = True
            if not net.autostart():
                net.setAutostart(1)
                changed = True
        return changed

    def update_network_hosts(self, name: str, add: tuple[HostEntry, ...], remove: tuple[HostEntry, ...]) -> bool:
        """Remove, then add, DHCP reservations and their DNS names, on the running network and
        in its config. Re-checked first: only what is there is removed, only what is missing
        added. False when there was nothing to do."""
        net = lookup(lambda: self.conn.networkLookupByName(name), libvirt.VIR_ERR_NO_NETWORK, f"look up network {name}")
        if net is None:
            raise NotFound("no such network", f"update network {name}")
        changed = False
        with wrapped(f"update the reservations of network {name}"):
            have = set(netxml.hosts_of(net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)))
            flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG | (libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
                                                                 if net.isActive() else 0)
            for host in remove:
                if host in have:
                    self._update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, host, flags)
                    changed = True
            for host in add:
                if host not in have:
                    self._update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, host, flags)
                    changed = True
        return changed

    @staticmethod
    def _update(net: libvirt.virNetwork, command: int, host: HostEntry, flags: int) -> None:
        net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, netxml.dhcp_host_xml(host), flags)
        if host.name:
            try:
                net.update(command, libvirt.VIR_NETWORK_SECTION_DNS_HOST, -1, netxml.dns_host_xml(host), flags)
            except libvirt.libvirtError:
                # a DNS entry already gone (removed by hand) is no reason to fail its removal
                if command != libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE:
                    raise
