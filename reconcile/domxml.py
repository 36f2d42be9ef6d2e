"""Domain XML in both directions: spec -> XML to define, live XML -> essence to compare.

Pure: no libvirt, no files. XML is built with ElementTree, never by string formatting, so
a value from a spec can never inject markup. Reading keeps only what a spec can express
(the essence); everything libvirt adds on its own (PCI addresses, controllers, aliases,
seclabels, expanded machine types) is ignored here or normalised by the planner.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from .model import DomainSpec, Ownership, VolumeRef

NAMESPACE = "http://reconcile.dev/xmlns/domain/1"
PREFIX = "reconcile"
ET.register_namespace(PREFIX, NAMESPACE)

_Q = "{%s}" % NAMESPACE


def spec_hash(spec: DomainSpec) -> str:
    """A stable digest of everything the spec asks of a domain, recorded in its metadata."""
    doc = {
        "essence": spec.essence(),
        "sizes": {d.target: d.size for d in spec.disks},
        "keep": {d.target: d.keep for d in spec.disks},
    }
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ownership_element(owner: Ownership) -> ET.Element:
    el = ET.Element(_Q + "owner", {
        "project": owner.project,
        "spec": owner.spec_file,
        "hash": owner.spec_hash,
    })
    for vol in owner.volumes:
        ET.SubElement(el, _Q + "volume", {"pool": vol.pool, "name": vol.name, "keep": "yes" if vol.keep else "no"})
    return el


def domain_xml(spec: DomainSpec, owner: Ownership, uuid: str | None = None) -> str:
    """The XML reconcile defines for a spec. `uuid` keeps a redefined domain's identity."""
    dom = ET.Element("domain", {"type": spec.type})
    ET.SubElement(dom, "name").text = spec.name
    if uuid:
        ET.SubElement(dom, "uuid").text = uuid
    ET.SubElement(dom, "metadata").append(ownership_element(owner))
    ET.SubElement(dom, "memory", {"unit": "KiB"}).text = str(spec.memory)
    current = spec.current_memory if spec.current_memory is not None else spec.memory
    ET.SubElement(dom, "currentMemory", {"unit": "KiB"}).text = str(current)
    ET.SubElement(dom, "vcpu").text = str(spec.vcpus)

    os_el = ET.SubElement(dom, "os")
    type_attrs = {"arch": spec.arch}
    if spec.machine:
        type_attrs["machine"] = spec.machine
    ET.SubElement(os_el, "type", type_attrs).text = "hvm"
    for dev in spec.boot or ():
        ET.SubElement(os_el, "boot", {"dev": dev})

    # ACPI is what makes a graceful shutdown possible; without it only a forced stop works.
    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")

    devices = ET.SubElement(dom, "devices")
    for disk in spec.disks:
        el = ET.SubElement(devices, "disk", {"type": "volume", "device": "disk"})
        ET.SubElement(el, "driver", {"name": "qemu", "type": disk.format})
        ET.SubElement(el, "source", {"pool": disk.pool, "volume": disk.volume})
        ET.SubElement(el, "target", {"dev": disk.target, "bus": disk.bus})
    for cdrom in spec.cdroms:
        el = ET.SubElement(devices, "disk", {"type": "file", "device": "cdrom"})
        ET.SubElement(el, "driver", {"name": "qemu", "type": "raw"})
        ET.SubElement(el, "source", {"file": cdrom.path})
        ET.SubElement(el, "target", {"dev": cdrom.target, "bus": cdrom.bus})
        ET.SubElement(el, "readonly")
    if spec.graphics:
        g = spec.graphics
        attrs = {"type": g.type}
        if g.port is None:
            attrs["autoport"] = "yes"
        else:
            attrs.update(port=str(g.port), autoport="no")
        el = ET.SubElement(devices, "graphics", attrs)
        if g.listen:
            ET.SubElement(el, "listen", {"type": "address", "address": g.listen})
    return ET.tostring(dom, encoding="unicode")


def read_ownership(root: ET.Element) -> Ownership | None:
    el = root.find(f"metadata/{_Q}owner")
    if el is None:
        return None
    volumes = tuple(
        VolumeRef(pool=v.get("pool", ""), name=v.get("name", ""), keep=v.get("keep") == "yes")
        for v in el.findall(_Q + "volume")
    )
    return Ownership(
        project=el.get("project", ""),
        spec_file=el.get("spec", ""),
        spec_hash=el.get("hash", ""),
        volumes=volumes,
    )


def _kib(el: ET.Element | None) -> int | None:
    if el is None or el.text is None:
        return None
    factor = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "m": 1024, "mib": 1024,
              "g": 1024**2, "gib": 1024**2, "t": 1024**3, "tib": 1024**3}
    unit = el.get("unit", "KiB").lower()
    return int(int(el.text) * factor.get(unit, 1))


def essence_of(xml: str, volume_by_path: Mapping[str, tuple[str, str]] | None = None) -> dict[str, Any]:
    """The essence of a live domain, in the shape `DomainSpec.essence` produces.

    `volume_by_path` maps a file path to (pool, volume), so a disk given as a plain file that
    lives in a pool reads the same as one given as a pool volume.
    """
    root = ET.fromstring(xml)
    return essence_of_element(root, volume_by_path or {})


def essence_of_element(root: ET.Element, volume_by_path: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    os_type = root.find("os/type")
    disks: dict[str, Any] = {}
    cdroms: dict[str, Any] = {}
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        if target is None:
            continue
        dev, bus = target.get("dev", ""), target.get("bus", "")
        source = disk.find("source")
        driver = disk.find("driver")
        if disk.get("device") == "cdrom":
            path = source.get("file") if source is not None else None
            cdroms[dev] = {"path": path, "bus": bus}
        elif disk.get("device", "disk") == "disk":
            pool = volume = None
            if source is not None:
                if disk.get("type") == "volume":
                    pool, volume = source.get("pool"), source.get("volume")
                elif source.get("file") in volume_by_path:
                    pool, volume = volume_by_path[source.get("file")]
                else:
                    volume = source.get("file") or source.get("dev")
            fmt = driver.get("type") if driver is not None else None
            disks[dev] = {"pool": pool, "volume": volume, "format": fmt, "bus": bus}

    graphics: dict[str, Any] = {}
    g = root.find("devices/graphics")
    if g is not None:
        listen = g.get("listen")
        if listen is None:
            listen_el = g.find("listen[@type='address']")
            listen = listen_el.get("address") if listen_el is not None else None
        autoport = g.get("autoport") == "yes"
        port = g.get("port")
        graphics = {
            "type": g.get("type"),
            "listen": listen,
            "port": "auto" if autoport or port in (None, "-1") else int(port),
        }

    memory = _kib(root.find("memory"))
    current = _kib(root.find("currentMemory"))
    vcpu = root.find("vcpu")
    return {
        "type": root.get("type"),
        "arch": os_type.get("arch") if os_type is not None else None,
        "machine": os_type.get("machine") if os_type is not None else None,
        "memory": memory,
        "current_memory": current if current is not None else memory,
        "vcpus": int(vcpu.text) if vcpu is not None and vcpu.text else None,
        "boot": [b.get("dev") for b in root.findall("os/boot")],
        "disks": disks,
        "cdroms": cdroms,
        "graphics": graphics,
    }
