"""Storage pool and volume XML in both directions. Pure.

One skeleton for every volume reconcile creates (an empty disk, an overlay, an import, a
seed), and the reading of a volume's XML into `ObservedVolume`.

A pool reconcile creates carries its ownership record in its own definition, so that the
record is there from the moment the pool is defined until it is undefined, and a run
killed at any point between leaves no pool that reconcile made but does not know it made.
libvirt keeps no `<metadata>` or `<description>` for a pool, nor `<source><name>` for a
directory pool (libvirt 9.0 drops them on define); it does keep a directory pool's
`<source><vendor name=…/><product name=…/>`, which mean nothing to a directory pool. So
the vendor says the record is reconcile's (`OWNER_VENDOR`), and the product holds it as
words `KEY=VALUE`, each value percent-encoded: `project=tour spec=/srv/lab/pool.yaml
directory=made` (or `directory=found`: the directory was there before the pool).
"""

from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET

from ..model import ObservedVolume, PoolOwner

OWNER_VENDOR = "http://reconcile.dev/xmlns/pool/1"


def pool_xml(name: str, path: str, owner: PoolOwner | None = None) -> str:
    """A directory pool at `path`, with reconcile's record of `owner` if given."""
    root = ET.Element("pool", {"type": "dir"})
    ET.SubElement(root, "name").text = name
    if owner is not None:
        _set_owner(root, owner)
    ET.SubElement(ET.SubElement(root, "target"), "path").text = path
    return ET.tostring(root, encoding="unicode")


def with_owner(xml: str, owner: PoolOwner) -> str:
    """A pool's own definition (as libvirt gives it) with reconcile's record set to `owner`,
    everything else kept: to define it again."""
    root = ET.fromstring(xml)
    _set_owner(root, owner)
    return ET.tostring(root, encoding="unicode")


def _set_owner(root: ET.Element, owner: PoolOwner) -> None:
    source = root.find("source")
    if source is None:
        source = ET.Element("source")
        root.insert(1, source)  # after <name>, where libvirt writes it
    for tag in ("vendor", "product"):
        for old in source.findall(tag):
            source.remove(old)
    words = {"project": owner.project, "spec": owner.spec_file, "directory": "made" if owner.made_directory else "found"}
    ET.SubElement(source, "vendor", {"name": OWNER_VENDOR})
    ET.SubElement(source, "product", {"name": " ".join(f"{k}={urllib.parse.quote(v, safe='/')}"
                                                       for k, v in words.items())})


def pool_owner(xml: str) -> PoolOwner | None:
    """reconcile's record in a pool's definition; None when it has none (or one edited into
    something else: then the pool is not taken for reconcile's)."""
    if not xml:
        return None
    source = ET.fromstring(xml).find("source")
    vendor = source.find("vendor") if source is not None else None
    product = source.find("product") if source is not None else None
    if vendor is None or vendor.get("name") != OWNER_VENDOR or product is None:
        return None
    words = {}
    for word in (product.get("name") or "").split():
        key, sep, value = word.partition("=")
        if sep:
            words[key] = urllib.parse.unquote(value)
    if not words.get("project") or words.get("directory") not in ("made", "found"):
        return None
    return PoolOwner(words["project"], words.get("spec", ""), words["directory"] == "made")


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
