"""Which devices of a domain no spec field describes: export names them in comments, the
plan in a note, and an update keeps them, since `domain.domain_xml` only rewrites the
devices a spec manages.

Pure: it reads an element tree. Three kinds of device are not listed: those a spec models
(disks and cdroms, interfaces, the first graphics, the first serial port on a pty and its
console, the guest agent's channel), the plumbing libvirt adds to every domain on its own
(the emulator, controllers, the PS/2 mouse and keyboard, the balloon, one plain video card,
an audio backend that plays nothing) and nothing else: a device of any other kind, or a
second one where a spec has one, is listed, so that adopting a domain never hides
something it has.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

from ..model import UnmodeledDevice
from .domain import is_agent_channel

# What libvirt adds to a domain that did not ask for it, so not worth a word.
_PLUMBING = {"emulator", "controller"}
_PLAIN_VIDEO = {"cirrus", "vga", "qxl", "bochs"}  # the models libvirt picks when a domain names none
_SILENT_AUDIO = {"none", "spice"}  # the backend libvirt adds beside graphics; spice: that of a SPICE console
_ADDED_CHILDREN = {"address", "alias"}  # what libvirt writes into every device: not the device's meaning


def unmodeled(root: ET.Element) -> tuple[UnmodeledDevice, ...]:
    """The devices of a domain's XML that no spec field describes, in document order."""
    devices = root.find("devices")
    if devices is None:
        return ()
    out = []
    seen: set[str] = set()  # of the kinds a spec has one of: the first is modeled, the rest are not
    videos = 0
    for el in devices:
        tag = el.tag
        if not isinstance(tag, str) or tag in _PLUMBING:
            continue
        if tag == "video":
            videos += 1
            if videos == 1 and _plain_video(el):
                continue
        elif _modeled(el, seen) or _default(el):
            continue
        out.append(UnmodeledDevice(tag, one_line(el)))
    return tuple(out)


def _modeled(el: ET.Element, seen: set[str]) -> bool:
    tag = el.tag
    if tag == "disk":
        return el.get("device", "disk") in ("disk", "cdrom")
    if tag == "interface":
        return True
    if tag == "graphics" or tag == "serial":
        first = tag not in seen
        seen.add(tag)
        # A first serial port of another type than pty is what `console` leaves alone.
        return first and (tag == "graphics" or el.get("type") == "pty")
    if tag == "console":
        target = el.find("target")
        return target is None or target.get("type", "serial") == "serial"  # the serial port's own console
    if tag == "channel":
        return is_agent_channel(el)
    return False


def _default(el: ET.Element) -> bool:
    tag = el.tag
    if tag == "input":
        return el.get("type") in ("mouse", "keyboard") and el.get("bus") == "ps2"
    if tag == "memballoon":
        return el.get("model") == "virtio" and not _meaningful_children(el)
    if tag == "audio":
        return el.get("type") in _SILENT_AUDIO and not _meaningful_children(el)
    return False


def _plain_video(el: ET.Element) -> bool:
    model = el.find("model")
    if model is None:
        return True
    extras = [c for c in model if isinstance(c.tag, str)]  # <acceleration>, <resolution>
    return model.get("type") in _PLAIN_VIDEO and model.get("heads", "1") == "1" and not extras


def _meaningful_children(el: ET.Element) -> list[ET.Element]:
    return [c for c in el if isinstance(c.tag, str) and c.tag not in _ADDED_CHILDREN]


def one_line(el: ET.Element) -> str:
    """An element as XML on one line, without what libvirt adds to every device (its PCI or
    drive address, its alias) and without the indentation between elements."""
    el = copy.deepcopy(el)
    _strip(el)
    return ET.tostring(el, encoding="unicode")


def _strip(el: ET.Element) -> None:
    for child in list(el):
        if child.tag in _ADDED_CHILDREN:
            el.remove(child)
            continue
        _strip(child)
        if child.tail is not None and not child.tail.strip():
            child.tail = None
    if el.text is not None and not el.text.strip():
        el.text = None
    el.tail = None
