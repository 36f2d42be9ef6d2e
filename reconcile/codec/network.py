"""Network XML in both directions: spec -> XML to define, live XML -> essence to compare. Pure.

A network reconcile creates carries an ownership element in its own namespace, as domains do,
so a pipeline can tell which networks a project made. Networks are never removed implicitly.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from typing import Any

from ..model import NetworkSpec

NAMESPACE = "http://reconcile.dev/xmlns/network/1"
ET.register_namespace("reconcile-net", NAMESPACE)
_Q = "{%s}" % NAMESPACE


def network_xml(spec: NetworkSpec, project: str) -> str:
    net = ET.Element("network")
    ET.SubElement(net, "name").text = spec.name
    ET.SubElement(ET.SubElement(net, "metadata"), _Q + "owner", {"project": project, "spec": spec.origin.file})
    if spec.mode == "nat":
        ET.SubElement(net, "forward", {"mode": "nat"})
    if spec.bridge:
        ET.SubElement(net, "bridge", {"name": spec.bridge})
    if spec.ip:
        ip = ET.SubElement(net, "ip", {"address": spec.ip, "netmask": spec.netmask or "255.255.255.0"})
        if spec.dhcp_start and spec.dhcp_end:
            ET.SubElement(ET.SubElement(ip, "dhcp"), "range", {"start": spec.dhcp_start, "end": spec.dhcp_end})
    return ET.tostring(net, encoding="unicode")


def owner_project(xml: str) -> str | None:
    el = ET.fromstring(xml).find(f"metadata/{_Q}owner")
    return el.get("project") if el is not None else None


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
