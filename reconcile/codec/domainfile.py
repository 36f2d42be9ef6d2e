"""A libvirt domain XML file (one that `virsh define` would read) as spec data, for `import`.

Pure: it is given the file's bytes and what the host has. The XML is read with expat driven
directly, so that a DOCTYPE, and with it every entity declaration (a "billion laughs", an
external file), is refused before anything is expanded, and every element keeps its line
and column for messages. Where the file leaves something to libvirt, it means what libvirt
would make of it (a disk's bus from its target's name, as libvirt derives it). Then the
domain goes through the same `export.spec_of` as a domain on the host, as a domain to
define stopped: a definition says nothing of whether it runs.

What would lose data is refused, located in the file: a disk that is no volume of a storage
pool on the host (applying the spec would make an empty volume, not use the file), a disk
another domain already has, a floppy or a LUN. What the spec language does not describe but
loses nothing (a sound card, a UUID, a CPU model) is listed, to be printed as comments: the
domain the spec defines has libvirt's defaults there instead.
"""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from xml.parsers import expat

from ..errors import Diagnostic
from ..model import Observed, UnmodeledDevice
from . import devices
from .domain import MEMORY_UNITS, essence_of_element
from .export import ExportedDomain, spec_of

_WHOLE = re.compile(r"[0-9]+")  # as libvirt reads a number: ASCII digits ("²" is a digit to Python, not to int)
MAX_XML_BYTES = 10 * 1024 * 1024  # what virsh reads of an XML file at most (VIRSH_MAX_XML_FILE)

# libvirt's bus for a disk whose target names none, by the target's prefix
# (virDomainDiskDefParseXML): hda is ide, sda scsi, vda virtio, xvda xen.
_BUS_OF_PREFIX = (("hd", "ide"), ("sd", "scsi"), ("vd", "virtio"), ("xvd", "xen"), ("ubd", "uml"))

# Top-level elements the spec carries (name, memory, vcpus, the os's type and boot order,
# the devices), and values of others that are what libvirt gives a domain anyway.
_CARRIED = {"name", "memory", "currentMemory", "vcpu", "os", "devices"}
_DEFAULTS = {"on_poweroff": "destroy", "on_reboot": "restart", "on_crash": "destroy"}
_OWN_FEATURES = {"acpi", "apic", "pae"}  # reconcile gives a new domain ACPI and APIC; PAE is i686's own


@dataclass(frozen=True)
class DomainFile:
    """A domain XML file as read: its tree, and where in the file each element starts."""

    path: str
    root: ET.Element
    positions: Mapping[ET.Element, tuple[int, int]]

    def at(self, el: ET.Element | None) -> tuple[int, int]:
        return self.positions.get(el, (1, 1)) if el is not None else self.positions.get(self.root, (1, 1))

    def diag(self, el: ET.Element | None, field: str, message: str, resource: str = "") -> Diagnostic:
        line, column = self.at(el)
        return Diagnostic(self.path, line, column, field, message, resource)


class _Refused(Exception):
    pass


def parse(path: str, data: bytes) -> DomainFile | Diagnostic:
    """The file's tree, or the one problem that kept it from being read."""
    if len(data) > MAX_XML_BYTES:
        return Diagnostic(path, 1, 1, "", f"the file is larger than {MAX_XML_BYTES // (1024 * 1024)} MiB, which "
                                          "virsh would not read either; expected a domain XML file")
    parser = expat.ParserCreate(namespace_separator="}")
    builder = ET.TreeBuilder()
    positions: dict[ET.Element, tuple[int, int]] = {}

    def name(raw: str) -> str:
        return "{" + raw if "}" in raw else raw

    def start(tag: str, attrs: dict[str, str]) -> None:
        el = builder.start(name(tag), {name(k): v for k, v in attrs.items()})
        positions[el] = (parser.CurrentLineNumber, parser.CurrentColumnNumber + 1)

    def refuse(*_args: object) -> None:
        raise _Refused()

    parser.StartElementHandler = start
    parser.EndElementHandler = lambda tag: builder.end(name(tag))
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = refuse  # before any declaration in it is read
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
    except _Refused:
        return Diagnostic(path, parser.CurrentLineNumber, parser.CurrentColumnNumber + 1, "",
                          "a DOCTYPE or an entity declaration; expected a domain XML document without them (libvirt "
                          "writes none), so nothing in it can expand or read another file")
    except expat.ExpatError as exc:
        return Diagnostic(path, exc.lineno, exc.offset + 1, "",
                          f"the XML is not well-formed: {expat.errors.messages[exc.code]}; expected a domain XML "
                          "document as `virsh define` reads it (xmllint --noout FILE shows the same)")
    return DomainFile(path, builder.close(), positions)


@dataclass(frozen=True)
class Imported:
    """A domain file as spec data, what kept it from being written (located in the file),
    and what the spec leaves to libvirt's defaults (devices and settings), in file order."""

    exported: ExportedDomain
    problems: tuple[Diagnostic, ...]
    not_carried: tuple[UnmodeledDevice, ...]


def import_domain(doc: DomainFile, observed: Observed) -> Imported:
    root = doc.root
    name_el = root.find("name")
    name = (name_el.text or "").strip() if name_el is not None else ""
    if root.tag != "domain":
        return Imported(ExportedDomain(name, {}), (doc.diag(root, "", f"the file holds <{root.tag}>; expected a "
                                                           "libvirt domain (<domain type='kvm'>...</domain>)"),), ())
    if not name:
        return Imported(ExportedDomain(name, {}), (doc.diag(name_el, "name", "the domain has no <name>; expected "
                                                                             "one, which the spec takes as its "
                                                                             "name"),), ())
    problems = [doc.diag(el, field, message, name) for el, field, message in _unreadable(root)]
    if name in observed.domains:
        problems.append(doc.diag(name_el, "name", f"a domain named {name} is on {observed.uri} already; expected a "
                                                  f"domain not defined yet (`reconcile export {name}` prints the "
                                                  "spec of the one there)", name))
    if problems:
        return Imported(ExportedDomain(name, {}), tuple(problems), ())
    tree = _with_libvirts_defaults(root)
    essence = essence_of_element(tree, observed.by_path)
    exported = spec_of(name, essence, False, observed, again="import")
    for problem in exported.problems:
        problems.append(doc.diag(_element_at(root, problem.path), problem.field, problem.message, name))
    problems.extend(doc.diag(el, field, message, name) for el, field, message in _lossy(root, essence, observed))
    return Imported(exported, tuple(problems), _not_carried(tree))


def _unreadable(root: ET.Element) -> list[tuple[ET.Element, str, str]]:
    """Values libvirt would refuse, and that nothing could read further: a size without a
    number, a count of vcpus that is no number, a port that is no number."""
    out = []
    for tag, field in (("memory", "memory"), ("currentMemory", "current_memory")):
        el = root.find(tag)
        if el is None:
            continue
        if not _WHOLE.fullmatch((el.text or "").strip()):
            out.append((el, field, f"<{tag}> holds {(el.text or '').strip()!r}; expected a whole number (of KiB, or "
                                   "of its unit)"))
        elif el.get("unit", "KiB").lower() not in MEMORY_UNITS:
            out.append((el, field, f"unit {el.get('unit')!r}; expected one of libvirt's: KiB, MiB, GiB, KB, MB, ..."))
        elif int(el.text) * MEMORY_UNITS[el.get("unit", "KiB").lower()] % (1 << 20):
            out.append((el, field, f"{el.text.strip()} {el.get('unit', 'KiB')} is not a whole number of MiB, which a "
                                   f"spec's {field} is; make it one and import again"))
    vcpu = root.find("vcpu")
    if vcpu is not None:
        for what, value in (("<vcpu>", (vcpu.text or "").strip()), ("current", vcpu.get("current", "1"))):
            if not _WHOLE.fullmatch(value):
                out.append((vcpu, "vcpus", f"{what} holds {value!r}; expected a whole number of vcpus"))
    for el in root.findall("devices/graphics"):
        port = el.get("port", "-1")
        if not (_WHOLE.fullmatch(port) or port == "-1"):
            out.append((el, "graphics", f"port {port!r}; expected a whole number (or -1: libvirt picks one)"))
    return out


def _with_libvirts_defaults(root: ET.Element) -> ET.Element:
    """A copy of the tree with what libvirt derives written out: a disk's bus."""
    tree = copy.deepcopy(root)
    for disk in tree.findall("devices/disk"):
        target = disk.find("target")
        if target is None or target.get("bus"):
            continue
        dev = target.get("dev", "")
        bus = "fdc" if disk.get("device") == "floppy" else next((b for p, b in _BUS_OF_PREFIX if dev.startswith(p)), "")
        if bus:
            target.set("bus", bus)
    return tree


def _lossy(root: ET.Element, essence: Mapping, observed: Observed) -> list[tuple[ET.Element, str, str]]:
    """What applying the spec would lose data over: a disk that is no disk or cdrom, and a
    volume another domain already writes to."""
    out = []
    seen: set[str] = set()
    for el in root.findall("devices/disk"):
        kind = el.get("device", "disk")
        target = el.find("target")
        dev = target.get("dev", "") if target is not None else ""
        if dev and dev in seen:
            out.append((el, f"disks[{dev}]", f"a second drive on target {dev}; expected each target once, as "
                                             "libvirt does"))
        seen.add(dev)
        if kind not in ("disk", "cdrom") or target is None:
            what = f"a {kind} drive" if target is not None else "a disk without a <target dev=...>"
            out.append((el, f"disks[{dev}]" if dev else "disks",
                        f"{what}; the spec language has disks and cdroms only, so the domain it defines would not "
                        "have this one: remove it from the file, or attach it by hand after the apply"))
    for target, d in essence.get("disks", {}).items():
        users = observed.attached.get((d.get("pool"), d.get("volume")), ())
        if users:
            out.append((_element_at(root, ("disks", target)), f"disks[{target}]",
                        f"disk {target} is volume {d['pool']}/{d['volume']}, which domain {', '.join(users)} has as "
                        "a disk already; two guests writing one disk corrupt it: give this one a volume of its own"))
    return out


def _not_carried(tree: ET.Element) -> tuple[UnmodeledDevice, ...]:
    """What the spec leaves to libvirt: devices no spec field describes, and settings outside
    the devices (a UUID, a CPU model, firmware) other than what libvirt would give anyway."""
    out = []
    for el in tree:
        if not isinstance(el.tag, str) or el.tag in _CARRIED or _default_setting(el):
            continue
        out.append(UnmodeledDevice(el.tag, devices.one_line(el)))
    os_el = tree.find("os")
    for el in os_el if os_el is not None else ():
        if isinstance(el.tag, str) and el.tag not in ("type", "boot"):
            out.append(UnmodeledDevice(el.tag, devices.one_line(el)))
    return tuple(out) + devices.unmodeled(tree)


def _default_setting(el: ET.Element) -> bool:
    text = (el.text or "").strip()
    if el.tag == "uuid":
        return not text  # an empty one says nothing; libvirt makes one either way
    if el.tag in _DEFAULTS:
        return text == _DEFAULTS[el.tag]
    if el.tag == "features":
        return {c.tag for c in el} <= _OWN_FEATURES and all(not c.attrib and not len(c) for c in el)
    if el.tag == "clock":
        return el.get("offset") == "utc" and not len(el) and set(el.attrib) == {"offset"}
    return False


def _element_at(root: ET.Element, path: tuple[str | int, ...]) -> ET.Element:
    """The element of the file a spec field comes from (the domain itself when none is)."""
    head = path[0] if path else ""
    if head in ("disks", "cdroms") and len(path) > 1:
        for disk in root.findall("devices/disk"):
            target = disk.find("target")
            if target is not None and target.get("dev") == path[1]:
                return disk
    if head == "interfaces" and len(path) > 1:
        found = root.findall("devices/interface")
        if isinstance(path[1], int) and path[1] < len(found):
            return found[path[1]]
    single = {"memory": "memory", "current_memory": "currentMemory", "vcpus": "vcpu", "name": "name",
              "arch": "os/type", "machine": "os/type", "graphics": "devices/graphics"}
    el = root.find(single[head]) if head in single else None
    return el if el is not None else root
