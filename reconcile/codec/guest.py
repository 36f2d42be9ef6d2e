"""What a running domain's live XML says about reaching it: its NICs, its VNC display, the
pty and log of its serial console, and whether it has the guest agent's channel. Pure."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ..model import Nic
from .domain import is_agent_channel


@dataclass(frozen=True)
class LiveFacts:
    nics: tuple[Nic, ...]
    vnc: str | None
    console_pty: str | None
    console_log: str | None
    agent_channel: bool
    uuid: str | None


def live_facts(xml: str) -> LiveFacts:
    root = ET.fromstring(xml)
    nics: list[Nic] = []
    vnc = pty = log = None
    agent = False
    devices = root.find("devices")
    for el in devices if devices is not None else ():
        if el.tag == "interface":
            mac, source, model = el.find("mac"), el.find("source"), el.find("model")
            if mac is None:
                continue
            network = source.get("network") if source is not None and el.get("type") == "network" else None
            nics.append(Nic(mac=mac.get("address", "").lower(), network=network,
                            model=model.get("type") if model is not None else None))
        elif el.tag == "graphics" and el.get("type") == "vnc" and vnc is None:
            port = el.get("port")
            if port and port != "-1":
                listen = el.get("listen") or "127.0.0.1"
                vnc = f"{listen}:{port}"
        elif el.tag == "serial" and pty is None and log is None:
            source, log_el = el.find("source"), el.find("log")
            pty = source.get("path") if source is not None and el.get("type") == "pty" else None
            log = log_el.get("file") if log_el is not None else None
        elif is_agent_channel(el):
            agent = True
    uuid = root.find("uuid")
    return LiveFacts(tuple(nics), vnc, pty, log, agent, uuid.text if uuid is not None else None)
