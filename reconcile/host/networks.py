"""Networks on the host: created, started and marked autostart when missing; their DHCP
reservations and DNS names updated live; removed, once no domain uses them."""

from __future__ import annotations

import libvirt

from ..codec import domain as domxml
from ..codec import network as netxml
from ..errors import NotFound
from ..model import HostEntry, Teardown, TeardownOutcome
from .connection import Connection
from .errors import lookup, translate, wrapped


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

    def remove_network(self, name: str, project: str) -> Teardown:
        """Stop and undefine a network this project's record says reconcile created, once no
        domain (of any project, or none) has an interface on it, in its definition or, for a
        running domain, live. Checked again first, the record and the domains."""
        net = lookup(lambda: self.conn.networkLookupByName(name), libvirt.VIR_ERR_NO_NETWORK, f"look up network {name}")
        if net is None:
            return Teardown(TeardownOutcome.GONE)
        with wrapped(f"remove network {name}"):
            xml = net.XMLDesc(0)
            owner, _ = netxml.owner_of(xml)
            if owner != project:
                return Teardown(TeardownOutcome.NOT_OURS, owner=owner)
            users = self.network_users(name, netxml.essence_of(xml).get("bridge"))
            if users:
                return Teardown(TeardownOutcome.IN_USE, users=users)
            if net.isActive():
                net.destroy()
            net.undefine()
        return Teardown(TeardownOutcome.REMOVED)

    def network_users(self, name: str, bridge: str | None) -> tuple[str, ...]:
        """The domains with an interface on network `name` (or on its `bridge`), read whole,
        whoever manages them: each domain's definition, and a running one's live XML (an
        interface may have been attached to it live only)."""
        with wrapped("read the host"):
            domains = self.conn.listAllDomains(0)
            calls = {}
            for dom in domains:
                calls[(dom.name(), "config")] = (dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)
                calls[(dom.name(), "live")] = (_live_xml, dom)
        users = set()
        for (domain, _), xml in self._reads(calls).items():
            if isinstance(xml, libvirt.libvirtError):
                if xml.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue  # undefined while we looked
                raise translate(xml, f"read domain {domain}") from xml  # never taken for "unused"
            if not xml:
                continue  # not running
            networks, bridges = domxml.interface_sources(xml)
            if name in networks or (bridge and bridge in bridges):
                users.add(domain)
        return tuple(sorted(users))

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


def _live_xml(dom: libvirt.virDomain) -> str:
    """A running domain's live XML; "" for one that is not running."""
    return dom.XMLDesc(0) if dom.isActive() else ""
