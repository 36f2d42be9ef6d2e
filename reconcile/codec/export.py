"""Existing domains as spec data (essence -> spec), so a hand-made lab can come under management.

Pure: it reads an `Observed` and returns plain data that `specs.dump` writes as YAML. What it
writes is exactly what the host has, so planning the exported spec right away finds nothing
to change. What the spec language cannot say (a disk that is no pool volume, an empty cdrom
drive, an interface on a host bridge) is an error naming the domain and the device.
"""

from __future__ import annotations

from typing import Any

from ..errors import ReconcileError
from ..model import Observed
from ..model.units import format_size as size_text


def export(observed: Observed, names: list[str], project: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if project:
        doc["project"] = project
    doc["domains"] = [export_domain(observed, name) for name in names]
    return doc


def export_domain(observed: Observed, name: str) -> dict[str, Any]:
    dom = observed.domains[name]
    e = dom.essence

    def fail(what: str) -> ReconcileError:
        return ReconcileError(f"domain {name}: {what}; the spec language cannot say that, so it is not exported")

    out: dict[str, Any] = {"name": name, "type": e["type"], "arch": e["arch"]}
    if e.get("machine"):
        out["machine"] = e["machine"]
    out["memory"] = size_text(e["memory"] * 1024)
    if e.get("current_memory") not in (None, e["memory"]):
        out["current_memory"] = size_text(e["current_memory"] * 1024)
    out["vcpus"] = e["vcpus"]
    if e.get("max_vcpus") not in (None, e["vcpus"]):
        out["max_vcpus"] = e["max_vcpus"]
    disks = []
    for target, d in e.get("disks", {}).items():
        if d.get("pool") is None:
            raise fail(f"disk {target} is {d.get('volume')}, which is in no storage pool (define a pool for its "
                       "directory, e.g. under 'pools', and export again)")
        vol = observed.volumes.get((d["pool"], d["volume"]))
        if vol is None:
            raise fail(f"disk {target} names volume {d['pool']}/{d['volume']}, which does not exist")
        disks.append({"name": d["volume"], "pool": d["pool"], "size": size_text(vol.capacity),
                      "format": d.get("format") or vol.format, "target": target, "bus": d["bus"]})
    if disks:
        out["disks"] = disks
    cdroms = []
    for target, c in e.get("cdroms", {}).items():
        if c.get("volume"):
            raise fail(f"cdrom drive {target} holds the pool volume {c.get('pool')}/{c['volume']}; a spec names a "
                       "cdrom by its file path (a cloud-init seed is declared with cloud_init instead)")
        if not c.get("path"):
            raise fail(f"cdrom drive {target} is empty")
        cdroms.append({"path": c["path"], "target": target, "bus": c["bus"]})
    if cdroms:
        out["cdroms"] = cdroms
    interfaces = []
    for i, n in enumerate(e.get("interfaces", [])):
        if n.get("network") is None:
            raise fail(f"interface {i + 1} is not on a libvirt network")
        iface = {"network": n["network"]}
        if n.get("mac"):
            iface["mac"] = n["mac"]
        if n.get("model"):
            iface["model"] = n["model"]
        interfaces.append(iface)
    out["interfaces"] = interfaces
    # A boot order that names a device the domain lacks (libvirt keeps <boot dev='cdrom'/>
    # without a cdrom) is not one a spec may state: it is left out, so left as it is.
    holders = {"hd": disks, "cdrom": cdroms, "network": interfaces}
    if e.get("boot") and all(holders.get(dev) for dev in e["boot"]):
        out["boot"] = list(e["boot"])
    g = e.get("graphics") or {}
    if g:
        out["graphics"] = {k: g[k] for k in ("type", "listen", "port") if g.get(k) is not None}
    c = e.get("console") or {}
    if c.get("type") == "pty":  # another kind of serial port is left out, so left alone
        out["console"] = {"log": c["log"]} if c.get("log") else {}
    if e.get("guest_agent"):
        out["guest_agent"] = True
    out["autostart"] = bool(e.get("autostart"))
    out["state"] = "running" if dom.running else "stopped"
    return out
