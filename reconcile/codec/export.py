"""Domains as spec data (essence -> spec), so a hand-made lab can come under management.

Pure: it reads an essence (of a domain on the host, or of a domain XML file: see
`domainfile`) and the host's pools and volumes, and returns spec data that `spec.dump`
writes as YAML. What it writes is exactly what the essence holds, so planning the spec
right away finds nothing to change. What the spec language cannot say (a disk that is no
pool volume, an empty cdrom drive, an interface on a host bridge, a value outside what a
spec allows) is a `Problem` at that field, and the domain is not written; the devices no
spec field describes go with the domain, for comments (`codec.devices`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..model import Observed, ObservedPool, UnmodeledDevice
from ..model.units import format_size as size_text

# What the spec language has (schemas/spec.schema.json; a test keeps the two the same).
TYPES = ("kvm", "qemu")
ARCHES = ("x86_64", "i686")
FORMATS = ("qcow2", "raw")
DISK_BUSES = ("virtio", "sata", "scsi", "ide", "usb")
CDROM_BUSES = ("sata", "ide", "scsi", "usb")
NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139")
GRAPHICS = ("vnc", "spice")
FIRST_PORT = 5900


@dataclass(frozen=True)
class Problem:
    """Something of a domain the spec language cannot say, at a field of the spec:
    ("disks", "vda"), ("interfaces", 0), ("memory",); () is the domain as a whole."""

    path: tuple[str | int, ...]
    message: str

    @property
    def field(self) -> str:
        return "".join(f"[{p}]" if i else str(p) for i, p in enumerate(self.path))


@dataclass(frozen=True)
class ExportedDomain:
    """A domain as spec data (its fields in the order a person writes them), the devices no
    spec field describes, and what kept it from being written (then `data` is incomplete)."""

    name: str
    data: dict[str, Any]
    unmodeled: tuple[UnmodeledDevice, ...] = ()
    problems: tuple[Problem, ...] = ()


def export_domain(observed: Observed, name: str) -> ExportedDomain:
    """A domain of the host as spec data, in the state it is in."""
    dom = observed.domains[name]
    return spec_of(name, dom.essence, dom.running, observed, dom.unmodeled, again="export")


def spec_of(name: str, e: Mapping[str, Any], running: bool, observed: Observed,
            unmodeled: tuple[UnmodeledDevice, ...] = (), again: str = "export") -> ExportedDomain:
    """`again` is the command to run again once a problem is fixed (export, import)."""
    problems: list[Problem] = []
    out: dict[str, Any] = {"name": name}
    for key, allowed in (("type", TYPES), ("arch", ARCHES)):
        if e.get(key) is not None:
            out[key] = e[key]
            if e[key] not in allowed:
                problems.append(Problem((key,), f"{key} {e[key]!r}; the spec language has {_either(allowed)}"))
    if e.get("machine"):
        out["machine"] = e["machine"]
    for key in ("memory", "current_memory"):
        kib = e.get(key)
        if kib is None or (key == "current_memory" and kib == e.get("memory")):
            continue
        if kib % 1024:
            problems.append(Problem((key,), f"{kib} KiB is not a whole number of MiB, which a spec's {key} is; make it "
                                            f"one (virsh setmaxmem / setmem NAME SIZE --config) and {again} again"))
        out[key] = size_text(kib * 1024)
    if "memory" not in out:
        problems.append(Problem(("memory",), f"the domain says no memory; give it one and {again} again"))
    if e.get("vcpus") is not None:
        out["vcpus"] = e["vcpus"]
    if e.get("max_vcpus") not in (None, e.get("vcpus")):
        out["max_vcpus"] = e["max_vcpus"]
    disks = _disks(e, observed, problems, again)
    if disks:
        out["disks"] = disks
    cdroms = _cdroms(e, problems)
    if cdroms:
        out["cdroms"] = cdroms
    interfaces = _interfaces(e, problems)
    out["interfaces"] = interfaces
    # A boot order that names a device the domain lacks (libvirt keeps <boot dev='cdrom'/>
    # without a cdrom) is not one a spec may state: it is left out, so left as it is.
    holders = {"hd": disks, "cdrom": cdroms, "network": interfaces}
    if e.get("boot") and all(holders.get(dev) for dev in e["boot"]):
        out["boot"] = list(e["boot"])
    graphics = _graphics(e, problems)
    if graphics:
        out["graphics"] = graphics
    c = e.get("console") or {}
    if c.get("type") == "pty":  # another kind of serial port is left out, so left alone
        out["console"] = {"log": c["log"]} if c.get("log") else {}
    if e.get("guest_agent"):
        out["guest_agent"] = True
    out["autostart"] = bool(e.get("autostart"))
    out["state"] = "running" if running else "stopped"
    return ExportedDomain(name, out, unmodeled, tuple(problems))


def _either(allowed: tuple[str, ...]) -> str:
    return ", ".join(allowed[:-1]) + f" and {allowed[-1]} only"


def _disks(e: Mapping[str, Any], observed: Observed, problems: list[Problem], again: str) -> list[dict[str, Any]]:
    disks = []
    for target, d in e.get("disks", {}).items():
        where = ("disks", target)
        if d.get("pool") is None:
            problems.append(Problem(where, _no_pool(target, d.get("volume"), observed.pools, again)))
            continue
        vol = observed.volumes.get((d["pool"], d["volume"]))
        if vol is None:
            problems.append(Problem(where, f"disk {target} names volume {d['pool']}/{d['volume']}, which does not "
                                           "exist"))
            continue
        fmt = d.get("format") or vol.format
        if fmt not in FORMATS:
            problems.append(Problem(where, f"disk {target} is in the format {fmt!r}; the spec language has "
                                           f"{_either(FORMATS)}"))
        if d["bus"] not in DISK_BUSES:
            problems.append(Problem(where, f"disk {target} is on the bus {d['bus']!r}; the spec language has "
                                           f"{_either(DISK_BUSES)}"))
        disks.append({"name": d["volume"], "pool": d["pool"], "size": size_text(vol.capacity), "format": fmt,
                      "target": target, "bus": d["bus"]})
    return disks


def _no_pool(target: str, source: str | None, pools: Mapping[str, ObservedPool], again: str) -> str:
    if not source:
        return (f"disk {target} has no file or volume as its source (an empty drive, or a network disk); the spec "
                "language has disks that are volumes of a storage pool")
    directory = os.path.dirname(source)
    pool = next((p for p in pools.values() if p.path and p.path.rstrip("/") == directory.rstrip("/")), None)
    if pool is not None:
        return (f"disk {target} is {source}, in the directory of pool {pool.name} but not one of its volumes: if the "
                f"file exists, `virsh pool-refresh {pool.name}` makes it one; if not, create it (virsh vol-create-as "
                f"{pool.name} {os.path.basename(source)} SIZE); then {again} again")
    return (f"disk {target} is {source}, which is in no storage pool (define a pool for its directory, e.g. under "
            f"'pools', and {again} again)")


def _cdroms(e: Mapping[str, Any], problems: list[Problem]) -> list[dict[str, Any]]:
    cdroms = []
    for target, c in e.get("cdroms", {}).items():
        where = ("cdroms", target)
        if c.get("volume"):
            problems.append(Problem(where, f"cdrom drive {target} holds the pool volume {c.get('pool')}/{c['volume']}; "
                                           "a spec names a cdrom by its file path (a cloud-init seed is declared "
                                           "with cloud_init instead)"))
        elif not c.get("path"):
            problems.append(Problem(where, f"cdrom drive {target} is empty; a spec's cdrom holds an ISO file"))
        else:
            if c["bus"] not in CDROM_BUSES:
                problems.append(Problem(where, f"cdrom drive {target} is on the bus {c['bus']!r}; the spec language "
                                               f"has {_either(CDROM_BUSES)}"))
            cdroms.append({"path": c["path"], "target": target, "bus": c["bus"]})
    return cdroms


def _interfaces(e: Mapping[str, Any], problems: list[Problem]) -> list[dict[str, Any]]:
    interfaces = []
    for i, n in enumerate(e.get("interfaces", [])):
        if n.get("network") is None:
            problems.append(Problem(("interfaces", i), f"interface {i + 1} is not on a libvirt network; the spec "
                                                       "language has interfaces on libvirt networks only"))
            continue
        iface = {"network": n["network"]}
        if n.get("mac"):
            iface["mac"] = n["mac"]
        if n.get("model"):
            iface["model"] = n["model"]
            if n["model"] not in NIC_MODELS:
                problems.append(Problem(("interfaces", i), f"interface {i + 1} is a {n['model']!r}; the spec "
                                                           f"language has {_either(NIC_MODELS)}"))
        interfaces.append(iface)
    return interfaces


def _graphics(e: Mapping[str, Any], problems: list[Problem]) -> dict[str, Any]:
    g = e.get("graphics") or {}
    if not g:
        return {}
    if g.get("type") not in GRAPHICS:
        problems.append(Problem(("graphics",), f"graphics of type {g.get('type')!r}; the spec language has "
                                               f"{_either(GRAPHICS)}"))
    if isinstance(g.get("port"), int) and g["port"] < FIRST_PORT:
        problems.append(Problem(("graphics",), f"graphics on port {g['port']}; a spec's port is {FIRST_PORT} or "
                                               "above, or auto"))
    return {k: g[k] for k in ("type", "listen", "port") if g.get(k) is not None}
