"""Running guests as the next tool needs them: their addresses (from the network's DHCP
leases, else the guest agent, else the host's ARP table), consoles and agent.

The guest agent and ARP are asked only for a domain the leases do not answer for: a
lease is one call per network for every domain on it, the agent is a round trip into
each guest.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.parse
from collections.abc import Iterable

import libvirt

from ..codec import guest as guestxml
from ..codec import network as netxml
from ..errors import HostError
from ..model import Address, AddressSource, Guest, Nic, one_line
from .connection import Connection
from .errors import lookup, translate, wrapped

_STATES = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_BLOCKED: "running",
           libvirt.VIR_DOMAIN_PAUSED: "paused", libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
           libvirt.VIR_DOMAIN_SHUTOFF: "shut off", libvirt.VIR_DOMAIN_CRASHED: "crashed",
           libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended"}
_SOURCES = {AddressSource.AGENT: libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
            AddressSource.ARP: libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP}
CONSOLE_LOG_LIMIT = 4 * 1024 * 1024  # the last bytes of a console log that a condition reads


class Guests(Connection):

    @property
    def local(self) -> bool:
        """Whether files on the libvirt host (a console log) are files on this machine."""
        parts = urllib.parse.urlsplit(self.uri)
        return not parts.hostname or (parts.hostname in ("localhost", "127.0.0.1", "::1") and "+" not in parts.scheme)

    def guests(self, names: Iterable[str]) -> dict[str, Guest]:
        """What the host says about each domain now; one that does not exist is "absent"."""
        found: dict[str, tuple[libvirt.virDomain, str, guestxml.LiveFacts]] = {}
        out: dict[str, Guest] = {}
        for name in names:
            dom = lookup(lambda n=name: self.conn.lookupByName(n), libvirt.VIR_ERR_NO_DOMAIN, f"look up domain {name}")
            if dom is None:
                out[name] = Guest(name, "absent")
                continue
            with wrapped(f"read domain {name}"):
                state = _STATES.get(dom.state()[0], "unknown")
                facts = guestxml.live_facts(dom.XMLDesc(0))
            found[name] = (dom, state, facts)
        networks = {n.network for _, state, f in found.values() if state == "running" for n in f.nics if n.network}
        leases, dhcp, unread = self._leases(networks)
        for name, (dom, state, facts) in found.items():
            addresses, note = (), ""
            if state == "running":
                addresses, note = self._addresses(dom, facts, leases, dhcp, unread)
                note = one_line(note)
            out[name] = Guest(name, state, nics=facts.nics, addresses=addresses, address_note=note, vnc=facts.vnc,
                              console_pty=facts.console_pty if state == "running" else None,
                              console_log=facts.console_log, agent_channel=facts.agent_channel, uuid=facts.uuid,
                              on_dhcp=_on_dhcp(facts.nics, dhcp, unread))
        return out

    def lease_expiries(self) -> dict[str, int]:
        """The latest expiry of each MAC's IPv4 lease, on every running network of the host."""
        with wrapped("list the networks"):
            names = {n.name() for n in self.conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE)}
        out: dict[str, int] = {}
        for mac, addresses in self._leases(names)[0].items():
            expiries = [a.expires for a in addresses if a.expires is not None]
            if expiries:
                out[mac] = max(expiries)
        return out

    def _leases(self, networks: set[str]) -> tuple[dict[str, list[Address]], set[str], dict[str, str]]:
        """Every network's IPv4 leases by MAC; which networks hand out addresses; and why a
        network could not be read."""
        by_mac: dict[str, list[Address]] = {}
        dhcp: set[str] = set()
        unread: dict[str, str] = {}
        for name in sorted(networks):
            try:
                net = lookup(lambda n=name: self.conn.networkLookupByName(n), libvirt.VIR_ERR_NO_NETWORK,
                             f"look up network {name}")
                if net is None:
                    unread[name] = f"network {name} does not exist"
                    continue
                with wrapped(f"read the DHCP leases of network {name}"):
                    if netxml.essence_of(net.XMLDesc(0)).get("dhcp_start"):
                        dhcp.add(name)
                    leases = net.DHCPLeases() if net.isActive() else []
            except HostError as exc:
                unread[name] = str(exc)
                continue
            for lease in leases:
                if lease.get("type") != libvirt.VIR_IP_ADDR_TYPE_IPV4 or not lease.get("mac"):
                    continue
                by_mac.setdefault(lease["mac"].lower(), []).append(Address(
                    lease["ipaddr"], AddressSource.LEASE, lease["mac"].lower(), lease.get("prefix"),
                    int(lease["expirytime"]) if lease.get("expirytime") else None))
        return by_mac, dhcp, unread

    def _addresses(self, dom: libvirt.virDomain, facts: guestxml.LiveFacts, leases: dict[str, list[Address]],
                   dhcp: set[str], unread: dict[str, str]) -> tuple[tuple[Address, ...], str]:
        if not facts.nics:
            return (), "it has no network interface"
        found = [a for nic in facts.nics for a in sorted(leases.get(nic.mac, ()), key=lambda a: -(a.expires or 0))]
        if found:
            return tuple(found), ""
        why = [_no_lease(nic, dhcp, unread) for nic in facts.nics]
        for source in (AddressSource.AGENT, AddressSource.ARP):
            if source is AddressSource.AGENT and not facts.agent_channel:
                continue
            try:
                found = self._interface_addresses(dom, facts.nics, source)
            except HostError as exc:
                reason = str(exc).split(": ", 1)[-1]
                why.append(f"the guest agent did not answer ({reason})" if source is AddressSource.AGENT
                           else f"the ARP table could not be read ({reason})")
                continue
            if found:
                return tuple(found), ""
            why.append("the guest agent reports no IPv4 address" if source is AddressSource.AGENT
                       else "the host's ARP table has no entry for it")
        return (), "; ".join(why)

    @staticmethod
    def _interface_addresses(dom: libvirt.virDomain, nics: tuple[Nic, ...], source: AddressSource) -> list[Address]:
        with wrapped(f"ask for the addresses of domain {dom.name()} ({source.value})"):
            answer = dom.interfaceAddresses(_SOURCES[source], 0) or {}
        order = {nic.mac: i for i, nic in enumerate(nics)}
        out: list[tuple[int, Address]] = []
        for iface in answer.values():
            mac = (iface.get("hwaddr") or "").lower()
            for a in iface.get("addrs") or ():
                if a.get("type") != libvirt.VIR_IP_ADDR_TYPE_IPV4 or ipaddress.ip_address(a["addr"]).is_loopback:
                    continue
                out.append((order.get(mac, len(order)), Address(a["addr"], source, mac, a.get("prefix"))))
        return [a for _, a in sorted(out, key=lambda pair: pair[0])]

    def agent_ping(self, name: str, timeout: int = 2) -> None:
        """Ask the guest agent for a ping; raises a `HostError` saying why it did not answer."""
        try:
            import libvirt_qemu
        except ImportError as exc:  # part of libvirt-python; missing only from a broken install
            raise HostError(f"libvirt-python has no libvirt_qemu module here ({exc}); reinstall libvirt-python, "
                            "or wait for tcp or console instead", f"ping the guest agent of {name}") from exc
        dom = lookup(lambda: self.conn.lookupByName(name), libvirt.VIR_ERR_NO_DOMAIN, f"look up domain {name}")
        if dom is None:
            raise HostError("no such domain", f"ping the guest agent of {name}")
        try:
            json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps({"execute": "guest-ping"}), timeout, 0))
        except libvirt.libvirtError as exc:
            raise translate(exc, f"ping the guest agent of {name}") from exc

    def console_log(self, path: str) -> str:
        """The end of a console log on the host, as text; raises a `HostError` when it cannot
        be read from here."""
        if not self.local:
            raise HostError(f"the log is on {urllib.parse.urlsplit(self.uri).hostname}, not on this machine; for a "
                            "remote host wait for tcp or agent instead", f"read console log {path}")
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - CONSOLE_LOG_LIMIT))
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""  # not written yet
        except PermissionError as exc:
            raise HostError("permission denied; run reconcile as a user that may read it (libvirt writes it as "
                            "root)", f"read console log {path}") from exc
        except OSError as exc:
            raise HostError(exc.strerror or str(exc), f"read console log {path}") from exc


def _on_dhcp(nics: tuple[Nic, ...], dhcp: set[str], unread: dict[str, str]) -> bool | None:
    """Whether an interface is on a network that hands out addresses; None when a network
    could not be read, so that may be."""
    if any(n.network in dhcp for n in nics):
        return True
    return None if any(n.network in unread for n in nics) else False


def _no_lease(nic: Nic, dhcp: set[str], unread: dict[str, str]) -> str:
    if nic.network is None:
        return f"{nic.mac} is not on a libvirt network, so it has no lease"
    if nic.network in unread:
        return f"no lease for {nic.mac}: {unread[nic.network]}"
    if nic.network not in dhcp:
        return f"no lease for {nic.mac}: network {nic.network} hands out no addresses (no DHCP)"
    return f"no lease for {nic.mac} on network {nic.network}: does the guest run a DHCP client?"
