"""The run lock's XML: an inactive libvirt network whose metadata names its holder. Pure."""

from __future__ import annotations

import xml.etree.ElementTree as ET

NAMESPACE = "http://reconcile.dev/xmlns/lock/1"
_TAG = "{%s}lock" % NAMESPACE
ET.register_namespace("reconcile-lock", NAMESPACE)


def lock_xml(name: str, holder: dict[str, str], token: str | None = None) -> str:
    """The network that is lock `name`; with `token` (its UUID), the same one redefined."""
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    if token:
        ET.SubElement(root, "uuid").text = token
    ET.SubElement(root, "metadata").append(ET.Element(_TAG, holder))
    return ET.tostring(root, encoding="unicode")


def holder_of(xml: str) -> dict[str, str]:
    """Who holds the lock, as its network's metadata records it."""
    el = ET.fromstring(xml).find(f"metadata/{_TAG}")
    return dict(el.attrib) if el is not None else {}
