"""Domain XML in both directions: spec -> XML to define, live XML -> essence to compare.

Pure: no libvirt, no files. XML is built with ElementTree, never by string formatting, so
a value from a spec can never inject markup. Reading keeps only what a spec can express
(the essence); everything libvirt adds on its own (PCI addresses, controllers, aliases,
seclabels, expanded machine types) is ignored here or normalised by the planner.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from ..model import DomainSpec, Ownership

from .ownership import _Q, _owner_element, ownership_element



def domain_xml(spec: DomainSpec, owner: Ownership, uuid: str | None = None, current: str | None = None,
               volume_by_path: Mapping[str, tuple[str, str]] | None = None) -> str:
    """The XML reconcile defines for a spec.

    With `current` (the domain's persistent XML as it is) only what the spec manages is
    rewritten: UUID, MAC addresses, NVRAM, PCI addresses and every field the spec leaves out
    stay as they are. Without it, a minimal domain is built. `uuid` keeps a replaced
    domain's identity.
    """
    if current is not None:
        dom = ET.fromstring(current)
    else:
        dom = ET.Element("domain", {"type": spec.type})
        ET.SubElement(dom, "name").text = spec.name
        if uuid:
            ET.SubElement(dom, "uuid").text = uuid
        # ACPI is what makes a graceful shutdown possible; without it only a forced stop works.
        features = ET.SubElement(dom, "features")
        ET.SubElement(features, "acpi")
        ET.SubElement(features, "apic")
    _apply_spec(dom, spec, owner, volume_by_path or {})
    return ET.tostring(dom, encoding="unicode")


def _child(parent: ET.Element, tag: str, index: int | None = None) -> ET.Element:
    el = parent.find(tag)
    if el is None:
        el = ET.Element(tag)
        if index is None:
            parent.append(el)
        else:
            parent.insert(index, el)
    return el


def _apply_spec(dom: ET.Element, spec: DomainSpec, owner: Ownership, by_path: Mapping[str, tuple[str, str]]) -> None:
    metadata = _child(dom, "metadata", 2)
    for old in metadata.findall(_Q + "owner"):
        metadata.remove(old)
    metadata.append(ownership_element(owner, spec.seed.instance_id if spec.seed is not None else None))
    for tag, kib in (("memory", spec.memory),
                     ("currentMemory", spec.current_memory if spec.current_memory is not None else spec.memory)):
        el = _child(dom, tag)
        el.attrib = {"unit": "KiB"}
        el.text = str(kib)
    vcpu = _child(dom, "vcpu")
    maximum = spec.max_vcpus if spec.max_vcpus is not None else max(spec.vcpus, int(vcpu.text or 0))
    vcpu.text = str(maximum)
    if spec.vcpus < maximum:
        vcpu.set("current", str(spec.vcpus))  # the rest can be plugged in while it runs
    else:
        vcpu.attrib.pop("current", None)

    os_el = _child(dom, "os")
    os_type = _child(os_el, "type", 0)
    if os_type.get("arch") not in (None, spec.arch) or dom.get("type") != spec.type:
        # Another architecture or hypervisor: libvirt picks the emulator (and, unless the spec
        # names one, the machine type) for it again.
        devices = dom.find("devices")
        for emulator in devices.findall("emulator") if devices is not None else ():
            devices.remove(emulator)
        if os_type.get("arch") not in (None, spec.arch):
            os_type.attrib.pop("machine", None)
    dom.set("type", spec.type)
    os_type.text = "hvm"
    os_type.set("arch", spec.arch)
    if spec.machine:
        os_type.set("machine", spec.machine)
    if spec.boot is not None:
        for old in os_el.findall("boot"):
            os_el.remove(old)
        for dev in spec.boot:
            ET.SubElement(os_el, "boot", {"dev": dev})

    devices = _child(dom, "devices")
    _apply_disks(devices, spec, by_path)
    if spec.interfaces is not None:
        _apply_interfaces(devices, spec)
    _apply_graphics(devices, spec)
    if spec.console is not None:
        _apply_console(devices, spec)
    if spec.guest_agent is not None:
        _apply_guest_agent(devices, spec.guest_agent)


def _apply_disks(devices: ET.Element, spec: DomainSpec, by_path: Mapping[str, tuple[str, str]]) -> None:
    """Keep each disk element that already says what the spec says (and its address); rewrite the rest."""
    want: dict[str, tuple[dict[str, Any], ET.Element]] = {}
    for disk in spec.disks:
        el = ET.Element("disk", {"type": "volume", "device": "disk"})
        ET.SubElement(el, "driver", {"name": "qemu", "type": disk.format})
        ET.SubElement(el, "source", {"pool": disk.pool, "volume": disk.volume})
        ET.SubElement(el, "target", {"dev": disk.target, "bus": disk.bus})
        want[disk.target] = (disk.essence(), el)
    for cdrom in spec.cdroms:
        el = ET.Element("disk", {"type": "file" if cdrom.path else "volume", "device": "cdrom"})
        ET.SubElement(el, "driver", {"name": "qemu", "type": "raw"})
        if cdrom.path:
            ET.SubElement(el, "source", {"file": cdrom.path})
        else:
            ET.SubElement(el, "source", {"pool": cdrom.pool, "volume": cdrom.volume})
        ET.SubElement(el, "target", {"dev": cdrom.target, "bus": cdrom.bus})
        ET.SubElement(el, "readonly")
        want[cdrom.target] = (cdrom.essence(), el)
    seen: set[str] = set()
    for index, el in enumerate(list(devices)):
        if el.tag != "disk" or el.get("device", "disk") not in ("disk", "cdrom"):
            continue
        target = el.find("target")
        dev = target.get("dev", "") if target is not None else ""
        if dev not in want or dev in seen:
            devices.remove(el)
            continue
        seen.add(dev)
        essence, new = want[dev]
        kind, have = _disk_essence(el, by_path)
        if kind == new.get("device") and {k: have.get(k) for k in essence} == essence:
            continue
        if kind == "cdrom" and new.get("device") == "cdrom" and have.get("bus") == essence["bus"]:
            # Only the medium changed: swap the source, keep the drive and its address.
            source = el.find("source")
            if source is None:
                source = ET.SubElement(el, "source")
            if "path" in essence:
                source.attrib = {"file": essence["path"]}
                el.set("type", "file")
            else:
                source.attrib = {"pool": essence["pool"], "volume": essence["volume"]}
                el.set("type", "volume")
            continue
        position = list(devices).index(el)
        devices.remove(el)
        devices.insert(position, new)
    for dev, (_essence, new) in want.items():
        if dev not in seen:
            devices.append(new)


def _apply_interfaces(devices: ET.Element, spec: DomainSpec) -> None:
    """Rewrite interfaces in place by position, so a MAC libvirt generated stays with its NIC."""
    existing = devices.findall("interface")
    for i, iface in enumerate(spec.interfaces or ()):
        if i < len(existing):
            el = existing[i]
            have = _interface_essence(el)
            if have["network"] == iface.network and have["model"] == iface.model and iface.mac in (None, have["mac"]):
                continue
            el.set("type", "network")
            for child in list(el):
                if child.tag not in ("mac", "model", "address", "boot", "alias"):
                    el.remove(child)
            el.insert(1, ET.Element("source", {"network": iface.network}))
            _child(el, "model").attrib = {"type": iface.model}
            if have["network"] != iface.network or have["model"] != iface.model:
                addr = el.find("address")
                if addr is not None and have["model"] != iface.model:
                    el.remove(addr)  # another model may need another kind of slot
        else:
            el = ET.SubElement(devices, "interface", {"type": "network"})
            if iface.mac is None and iface.derived_mac:  # a new NIC: the MAC it keeps from now on
                ET.SubElement(el, "mac", {"address": iface.derived_mac})
            ET.SubElement(el, "source", {"network": iface.network})
            ET.SubElement(el, "model", {"type": iface.model})
        if iface.mac is not None:
            mac = el.find("mac")
            if mac is None:
                mac = ET.Element("mac")
                el.insert(0, mac)
            mac.attrib = {"address": iface.mac}
    for el in existing[len(spec.interfaces or ()):]:
        devices.remove(el)


def _apply_graphics(devices: ET.Element, spec: DomainSpec) -> None:
    """The first graphics is the spec's; a second one (not modeled) stays, unless the spec
    says none at all."""
    existing = devices.findall("graphics")
    want = spec.graphics.essence() if spec.graphics else None
    keep = None
    if want is not None and existing:
        have = _graphics_essence(existing[0])
        if {k: have.get(k) for k in want} == want:
            keep = existing[0]
    for el in existing if want is None else existing[:1]:
        if el is not keep:
            devices.remove(el)
    if keep is None and not (want and want["type"] == "spice"):
        # What libvirt added for a SPICE console goes with it; it adds its own again if needed.
        for el in list(devices):
            if (el.tag == "audio" and el.get("type") == "spice") or (
                    el.tag in ("channel", "redirdev") and el.get("type") == "spicevmc"):
                devices.remove(el)
    if want is None or keep is not None:
        return
    g = spec.graphics
    attrs = {"type": g.type}
    if g.port is None:
        attrs["autoport"] = "yes"
    else:
        attrs.update(port=str(g.port), autoport="no")
    el = ET.Element("graphics", attrs)
    _insert_first(devices, el)
    if g.listen:
        ET.SubElement(el, "listen", {"type": "address", "address": g.listen})


def _insert_first(devices: ET.Element, el: ET.Element) -> None:
    """Add a device before the others of its kind, so that it is the one the spec describes
    (the first) and those it does not describe stay after it."""
    same = devices.findall(el.tag)
    devices.insert(list(devices).index(same[0]) if same else len(devices), el)


def _console_essence(serial: ET.Element) -> dict[str, Any]:
    log = serial.find("log")
    return {"type": serial.get("type"), "log": log.get("file") if log is not None else None}


def _apply_console(devices: ET.Element, spec: DomainSpec) -> None:
    """The first serial port on a pty, and the console paired with it; a serial port that
    already says what the spec says keeps what libvirt filled in (target type, model,
    alias). Other serial ports and consoles (a virtio console) are not the spec's: they stay."""
    serials = devices.findall("serial")
    if serials and _console_essence(serials[0]) == spec.console.essence():
        return
    target = serials[0].find("target") if serials else None
    port = target.get("port", "0") if target is not None else "0"
    if serials:
        devices.remove(serials[0])
    for el in devices.findall("console"):
        paired = el.find("target")
        if paired is None or (paired.get("type", "serial") == "serial" and paired.get("port", "0") == port):
            devices.remove(el)
    serial = ET.Element("serial", {"type": "pty"})
    _insert_first(devices, serial)
    if spec.console.log:
        # append='off': each start of the domain begins a fresh log, so it holds one boot
        ET.SubElement(serial, "log", {"file": spec.console.log, "append": "off"})
    ET.SubElement(serial, "target", {"port": "0"})
    console = ET.SubElement(devices, "console", {"type": "pty"})
    ET.SubElement(console, "target", {"type": "serial", "port": "0"})


GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


def is_agent_channel(el: ET.Element) -> bool:
    target = el.find("target") if el.tag == "channel" else None
    return target is not None and target.get("type") == "virtio" and target.get("name") == GUEST_AGENT_CHANNEL


def _apply_guest_agent(devices: ET.Element, wanted: bool) -> None:
    """The virtio channel the QEMU guest agent talks through; libvirt picks its socket."""
    channels = [el for el in devices.findall("channel") if is_agent_channel(el)]
    if wanted and not channels:
        channel = ET.SubElement(devices, "channel", {"type": "unix"})
        ET.SubElement(channel, "target", {"type": "virtio", "name": GUEST_AGENT_CHANNEL})
    elif not wanted:
        for el in channels:
            devices.remove(el)


# libvirt's memory units, in bytes: k, KiB, M, MiB, ... are powers of 1024, KB, MB, ... of 1000.
MEMORY_UNITS = {"b": 1, "bytes": 1, **{u: 1024 ** (i + 1) for i, p in enumerate("kmgtpe") for u in (p, p + "ib")},
                **{p + "b": 1000 ** (i + 1) for i, p in enumerate("kmgtpe")}}


def _kib(el: ET.Element | None) -> int | None:
    if el is None or el.text is None:
        return None
    return int(el.text) * MEMORY_UNITS.get(el.get("unit", "KiB").lower(), 1024) // 1024


def essence_of(xml: str, volume_by_path: Mapping[str, tuple[str, str]] | None = None) -> dict[str, Any]:
    """The essence of a live domain, in the shape `DomainSpec.essence` produces.

    `volume_by_path` maps a file path to (pool, volume), so a disk given as a plain file that
    lives in a pool reads the same as one given as a pool volume.
    """
    root = ET.fromstring(xml)
    return essence_of_element(root, volume_by_path or {})


def _disk_essence(disk: ET.Element, volume_by_path: Mapping[str, tuple[str, str]]) -> tuple[str, dict[str, Any]]:
    target = disk.find("target")
    bus = target.get("bus", "") if target is not None else ""
    source = disk.find("source")
    if disk.get("device") == "cdrom":
        if source is not None and disk.get("type") == "volume":  # a seed, or an ISO in a pool
            return "cdrom", {"pool": source.get("pool"), "volume": source.get("volume"), "bus": bus}
        path = source.get("file") if source is not None else None
        return "cdrom", {"path": path, "bus": bus}
    pool = volume = None
    if source is not None:
        if disk.get("type") == "volume":
            pool, volume = source.get("pool"), source.get("volume")
        elif source.get("file") in volume_by_path:
            pool, volume = volume_by_path[source.get("file")]
        else:
            volume = source.get("file") or source.get("dev")
    driver = disk.find("driver")
    fmt = driver.get("type") if driver is not None else None
    return "disk", {"pool": pool, "volume": volume, "format": fmt, "bus": bus}


def _interface_essence(el: ET.Element) -> dict[str, Any]:
    source = el.find("source")
    model = el.find("model")
    mac = el.find("mac")
    return {
        "network": source.get("network") if source is not None and el.get("type") == "network" else None,
        "model": model.get("type") if model is not None else None,
        "mac": mac.get("address") if mac is not None else None,
        "type": el.get("type"),
    }


def _graphics_essence(g: ET.Element) -> dict[str, Any]:
    listen = g.get("listen")
    if listen is None:
        listen_el = g.find("listen[@type='address']")
        listen = listen_el.get("address") if listen_el is not None else None
    autoport = g.get("autoport") == "yes"
    port = g.get("port")
    return {
        "type": g.get("type"),
        "listen": listen,
        "port": "auto" if autoport or port in (None, "-1") else int(port),
    }


def essence_of_element(root: ET.Element, volume_by_path: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    # One step at a time (find("os") then find("type")), not find("os/type"): a single tag
    # is looked up in C, a path goes through Python, and a plan reads every domain.
    os_el = root.find("os")
    os_type = os_el.find("type") if os_el is not None else None
    devices = root.find("devices")
    disks: dict[str, Any] = {}
    cdroms: dict[str, Any] = {}
    graphics: dict[str, Any] = {}
    interfaces = []
    console: dict[str, Any] = {}
    agent = False
    for el in devices if devices is not None else ():
        tag = el.tag
        if tag == "disk":
            target = el.find("target")
            if target is None or el.get("device", "disk") not in ("disk", "cdrom"):
                continue
            kind, essence = _disk_essence(el, volume_by_path)
            (cdroms if kind == "cdrom" else disks)[target.get("dev", "")] = essence
        elif tag == "interface":
            iface = _interface_essence(el)
            iface.pop("type")
            interfaces.append(iface)
        elif tag == "graphics" and not graphics:
            graphics = _graphics_essence(el)
        elif tag == "serial" and not console:
            # The console is the first serial port; libvirt pairs a <console> with it on x86.
            console = _console_essence(el)
        elif tag == "channel" and is_agent_channel(el):
            agent = True

    memory = _kib(root.find("memory"))
    current = _kib(root.find("currentMemory"))
    vcpu = root.find("vcpu")
    return {
        "type": root.get("type"),
        "arch": os_type.get("arch") if os_type is not None else None,
        "machine": os_type.get("machine") if os_type is not None else None,
        "memory": memory,
        "current_memory": current if current is not None else memory,
        "vcpus": int(vcpu.get("current") or vcpu.text) if vcpu is not None and vcpu.text else None,
        "max_vcpus": int(vcpu.text) if vcpu is not None and vcpu.text else None,
        "boot": [b.get("dev") for b in os_el.findall("boot")] if os_el is not None else [],
        "disks": disks,
        "cdroms": cdroms,
        "graphics": graphics,
        "interfaces": interfaces,
        "console": console,
        "cloud_init": _seed_essence(root),
        "guest_agent": agent,
    }


def _seed_essence(root: ET.Element) -> dict[str, Any]:
    owner = _owner_element(root)
    seed = owner.find(_Q + "seed") if owner is not None else None
    return {"instance_id": seed.get("instance-id")} if seed is not None else {}


_DISK = re.compile(r"<disk\b[^>]*\bdevice='disk'[^>]*>(.*?)</disk>", re.S)
_SOURCE = re.compile(r"<source\b([^>]*)>")
_ATTR = re.compile(r"(\w+)='([^']*)'")


def disk_sources(xml: str) -> tuple[set[str], set[tuple[str, str]]]:
    """The files and pool volumes a domain's disks (not cdroms) use, read from its XML text.

    For the domains of other projects and unmanaged ones, whose XML is otherwise not parsed:
    what matters of them is only whether they hold a disk reconcile would attach or delete.
    A regular expression over libvirt's own output (single-quoted attributes) is a tenth of
    the cost of parsing it.
    """
    files: set[str] = set()
    volumes: set[tuple[str, str]] = set()
    for disk in _DISK.finditer(xml):
        for source in _SOURCE.finditer(disk.group(1)):
            attrs = {k: html.unescape(v) for k, v in _ATTR.findall(source.group(1))}
            if "file" in attrs:
                files.add(attrs["file"])
            elif "dev" in attrs:
                files.add(attrs["dev"])
            elif "pool" in attrs and "volume" in attrs:
                volumes.add((attrs["pool"], attrs["volume"]))
    return files, volumes


_INTERFACE = re.compile(r"<interface\b([^>]*)>(.*?)</interface>", re.S)


def interface_sources(xml: str) -> tuple[set[str], set[str]]:
    """The networks (by name) and the bridges a domain's interfaces are on, read from its
    XML text as `disk_sources` reads disks: what tells whether a network is still used."""
    networks: set[str] = set()
    bridges: set[str] = set()
    for iface in _INTERFACE.finditer(xml):
        kind = dict(_ATTR.findall(iface.group(1))).get("type")
        for source in _SOURCE.finditer(iface.group(2)):
            attrs = {k: html.unescape(v) for k, v in _ATTR.findall(source.group(1))}
            if kind == "network" and "network" in attrs:
                networks.add(attrs["network"])
            elif kind == "bridge" and "bridge" in attrs:
                bridges.add(attrs["bridge"])
    return networks, bridges


def machine_aliases(capabilities_xml: str) -> dict[tuple[str, str], str]:
    """Machine types the hypervisor resolves, from its capabilities: (arch, alias) -> canonical."""
    out: dict[tuple[str, str], str] = {}
    root = ET.fromstring(capabilities_xml)
    for arch in root.findall("guest/arch"):
        for machine in arch.findall("machine") + arch.findall("domain/machine"):
            canonical = machine.get("canonical")
            if canonical and machine.text:
                out[(arch.get("name", ""), machine.text)] = canonical
    return out


def cdrom_with_media(live_xml: str, target: str, path: str | None) -> str | None:
    """The running domain's cdrom at `target` with `path` as its media (for a live device
    update); None when it has no such cdrom."""
    root = ET.fromstring(live_xml)
    for disk in root.findall("devices/disk"):
        dev = disk.find("target")
        if disk.get("device") == "cdrom" and dev is not None and dev.get("dev") == target:
            for old in disk.findall("source"):
                disk.remove(old)
            disk.set("type", "file")
            if path is not None:
                ET.SubElement(disk, "source", {"file": path})
            return ET.tostring(disk, encoding="unicode")
    return None
