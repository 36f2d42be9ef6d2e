"""Network XML in both directions: spec -> XML to define, live XML -> essence to compare. Pure.

A network reconcile creates carries an ownership element in its own namespace, as domains do:
the project and the spec file that declared it. It is how `destroy` and `apply --prune` know
the networks a project made (and may remove once no domain uses them), and a pipeline too.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from typing import Any

from ..model import HostEntry, NetworkSpec

NAMESPACE = "http://reconcile.dev/xmlns/network/1"
ET.register_namespace("reconcile-net", NAMESPACE)
_Q = "{%s}" % NAMESPACE


def network_xml(spec: NetworkSpec, project: str, hosts: tuple[HostEntry, ...] = (), spec_file: str = "") -> str:
    """The network to define; `hosts` are its DHCP reservations and DNS names; `spec_file`
    the absolute path of the file declaring it (what bounds a prune), else its origin's."""
    net = ET.Element("network")
    ET.SubElement(net, "name").text = spec.name
    ET.SubElement(ET.SubElement(net, "metadata"), _Q + "owner", {"project": project,
                                                                 "spec": spec_file or spec.origin.file})
    if spec.mode == "nat":
        ET.SubElement(net, "forward", {"mode": "nat"})
    if spec.bridge:
        ET.SubElement(net, "bridge", {"name": spec.bridge})
    named = [h for h in hosts if h.name]
    if spec.ip and named:
        dns = ET.SubElement(net, "dns")
        for h in named:
            dns.append(ET.fromstring(dns_host_xml(h)))
    if spec.ip:
        ip = ET.SubElement(net, "ip", {"address": spec.ip, "netmask": spec.netmask or "255.255.255.0"})
        if (spec.dhcp_start and spec.dhcp_end) or hosts:
            dhcp = ET.SubElement(ip, "dhcp")
            if spec.dhcp_start and spec.dhcp_end:
                ET.SubElement(dhcp, "range", {"start": spec.dhcp_start, "end": spec.dhcp_end})
            for h in hosts:
                dhcp.append(ET.fromstring(dhcp_host_xml(h)))
    return ET.tostring(net, encoding="unicode")


def dhcp_host_xml(host: HostEntry) -> str:
    """One DHCP reservation, as a network definition and a live update both take it."""
    attrs = {"mac": host.mac, "ip": host.ip}
    if host.name:
        attrs["name"] = host.name
    return ET.tostring(ET.Element("host", attrs), encoding="unicode")


def dns_host_xml(host: HostEntry) -> str:
    el = ET.Element("host", {"ip": host.ip})
    ET.SubElement(el, "hostname").text = host.name
    return ET.tostring(el, encoding="unicode")


def hosts_of(xml: str) -> tuple[HostEntry, ...]:
    """A network's DHCP reservations, sorted by address."""
    root = ET.fromstring(xml)
    out = [HostEntry(ip=h.get("ip", ""), mac=(h.get("mac") or "").lower(), name=h.get("name") or None)
           for h in root.findall("ip/dhcp/host") if h.get("ip") and h.get("mac")]
    return tuple(sorted(out))


def owner_project(xml: str) -> str | None:
    return owner_of(xml)[0]


def owner_of(xml: str) -> tuple[str | None, str]:
    """The project and the spec file reconcile's record in a network names; (None, "")
    for a network without one."""
    el = ET.fromstring(xml).find(f"metadata/{_Q}owner")
    return (el.get("project"), el.get("spec", "")) if el is not None else (None, "")


def essence_of(xml: str) -> dict[str, Any]:
    root = ET.fromstring(xml)
    forward = root.find("forward")
    mode = "isolated" if forward is None else forward.get("mode", "nat")
    bridge = root.find("bridge")
    ip = root.find("ip")
    dhcp = root.find("ip/dhcp/range")
    return {
        "mode": mode,
        "bridge": bridge.get("name") if bridge is not None else None,
        "ip": ip.get("address") if ip is not None else None,
        "netmask": (ip.get("netmask") or _prefix_mask(ip.get("prefix"))) if ip is not None else None,
        "dhcp_start": dhcp.get("start") if dhcp is not None else None,
        "dhcp_end": dhcp.get("end") if dhcp is not None else None,
    }


def subnet(ip: str | None, netmask: str | None) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The subnet a network's address and mask span (libvirt's default mask is /24)."""
    if not ip:
        return None
    try:
        return ipaddress.ip_interface(f"{ip}/{netmask or '255.255.255.0'}").network
    except ValueError:
        return None


def _prefix_mask(prefix: str | None) -> str | None:
    if not prefix or not prefix.isdigit():
        return None
    bits = (0xFFFFFFFF << (32 - int(prefix))) & 0xFFFFFFFF
    return ".".join(str((bits >> s) & 0xFF) for s in (24, 16, 8, 0))
