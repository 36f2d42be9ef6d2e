"""Storage pool and volume XML in both directions. Pure.

One skeleton for every volume reconcile creates (an empty disk, an overlay, an import, a
seed), and the reading of a volume's XML into `ObservedVolume`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ..model import ObservedVolume


def pool_xml(name: str, path: str) -> str:
    """A directory pool at `path`."""
    root = ET.Element("pool", {"type": "dir"})
    ET.SubElement(root, "name").text = name
    ET.SubElement(ET.SubElement(root, "target"), "path").text = path
    return ET.tostring(root, encoding="unicode")


def pool_path(xml: str) -> str:
    return ET.fromstring(xml).findtext("target/path", "") if xml else ""


def is_dir_pool(xml: str) -> bool:
    return ET.fromstring(xml).get("type") == "dir"


def volume_xml(name: str, capacity: int, fmt: str, backing: tuple[str, str] | None = None,
               private: bool = False) -> str:
    """A volume of `capacity` bytes in format `fmt`, allocated as it is written; with
    `backing` (path, format), a copy-on-write overlay on that file; `private`: readable by
    its owner only (the daemon's user; libvirt hands it to the hypervisor while a domain
    uses it), for a seed, which may hold secrets."""
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", {"unit": "bytes"}).text = str(capacity)
    ET.SubElement(root, "allocation", {"unit": "bytes"}).text = "0"
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", {"type": fmt})
    if private:
        ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = "0600"
    if backing is not None:
        store = ET.SubElement(root, "backingStore")
        ET.SubElement(store, "path").text = backing[0]
        ET.SubElement(store, "format", {"type": backing[1]})
    return ET.tostring(root, encoding="unicode")


def observed_volume(pool: str, name: str, xml: str) -> ObservedVolume:
    """libvirt's record of a volume (what it was created as, until the pool is refreshed)."""
    root = ET.fromstring(xml)

    def number(tag: str) -> int:
        el = root.find(tag)
        return int(el.text) if el is not None and el.text else 0

    fmt = root.find("target/format")
    return ObservedVolume(pool=pool, name=name, capacity=number("capacity"), allocation=number("allocation"),
                          format=fmt.get("type", "") if fmt is not None else "", path=root.findtext("target/path", ""),
                          backing=root.findtext("backingStore/path") or None)
