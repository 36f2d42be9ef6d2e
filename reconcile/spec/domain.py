"""One domain's merged spec (defaults, profile and its own fields, one copy of a `count`)
read into a `DomainSpec`, with the checks a schema cannot make: sizes and their limits,
device targets, volumes and MACs used once, boot devices that exist, references to pools
and networks to resolve later.

Each part of a domain is read by its own step; every step reports what is wrong where it
is written and lets the others go on, so one run lists every problem.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from typing import Any

from ..codec import network as netxml
from ..errors import Diagnostic
from ..model import (DEFAULT_STOP_TIMEOUT, Backing, Cdrom, Console, Disk, DomainSpec, Graphics, ImageSpec, Interface,
                     NetworkSpec, Seed, State)
from ..model.units import format_size, parse_size
from .access import read_access
from .cloud_init import compose_seed
from .formats import check_name
from .layers import Located
from .paths import at, values_at
from .schema import domain_fields
from .seen import Seen
from .source import Path_

MAX_MEMORY = 64 * 1024**4   # 1TiB on purpose is fine; 10^30 bytes is a unit mistake
MAX_DISK = 16 * 1024**5

# References a domain makes to resources that must be declared in the specs or exist on
# the host: (kind, path of the field inside a domain with "*" for every list item, default).
# A new resource kind adds a row.
REFERENCES: list[tuple[str, tuple[str, ...], str | None]] = [
    ("pools", ("disks", "*", "pool"), "default"),
    ("networks", ("interfaces", "*", "network"), None),
    ("pools", ("cloud_init", "pool"), None),
]

# Boot devices and the list of the domain that must hold at least one such device. A row
# whose list is not in the schema is not checked, nor is a list a spec may leave unmanaged
# (interfaces left out keep what the domain has), unless it is given and empty.
BOOT_DEVICES = {"hd": "disks", "cdrom": "cdroms", "network": "interfaces"}
UNMANAGED_WHEN_LEFT_OUT = {"interfaces"}

_DISK_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd", "usb": "sd", "ide": "hd"}


class DomainReader:
    """Reads one domain; `read` returns None when anything about it is wrong."""

    def __init__(self, item: Located, project: str, images: dict[str, ImageSpec], seen: Seen,
                 problems: list[Diagnostic], networks: dict[str, NetworkSpec] | None = None,
                 host: str | None = None, resolve_secrets: bool = True):
        self.item, self.data, self.images, self.seen, self.problems = item, item.data, images, seen, problems
        self.project, self.networks, self.host = project, networks or {}, host
        self.resolve_secrets = resolve_secrets
        self.name: str = item.data["name"]
        devices = list(self.data.get("disks", [])) + list(self.data.get("cdroms", []))
        self.explicit = {x["target"] for x in devices if x.get("target")}
        self.used_targets: set[str] = set()

    def problem(self, path: Path_, message: str) -> None:
        self.problems.append(self.item.diag(path, message))

    def read(self) -> DomainSpec | None:
        before = len(self.problems)
        data = self.data
        if "memory" not in data:
            self.problem((), "no memory given; expected memory here, in the domain's profile or in the defaults")
            return None
        memory = self.size(("memory",), True, MAX_MEMORY)
        current = self.size(("current_memory",), True, MAX_MEMORY) if "current_memory" in data else None
        if memory and current and current > memory:
            self.problem(("current_memory",), f"{data['current_memory']!r} is more than memory ({data['memory']}); "
                                              "expected at most memory")
        disks = self.disks()
        cdroms = self.cdroms()
        seed = self.seed(disks, cdroms) if "cloud_init" in data else None
        self.check_boot()
        self.note_references()
        if "max_vcpus" in data and data["max_vcpus"] < data.get("vcpus", 1):
            self.problem(("max_vcpus",), f"{data['max_vcpus']} is less than vcpus ({data.get('vcpus', 1)}); "
                                         "expected at least vcpus")
        interfaces = self.interfaces() if "interfaces" in data else None
        if "hostname" in data:
            name = data["hostname"].lower()
            if name in self.seen.hostnames:
                self.problem(("hostname",), f"{data['hostname']!r} is already the hostname of "
                                            f"{self.seen.hostnames[name]}; expected each domain to have its own")
            self.seen.hostnames.setdefault(name, f"domain {self.name!r}")
        access = read_access(data, self.problem)
        if len(self.problems) > before or memory is None:
            return None
        return DomainSpec(
            name=self.name, memory=memory // 1024, current_memory=current // 1024 if current else None,
            vcpus=data.get("vcpus", 1), origin=self.item.origin, type=data.get("type", "kvm"),
            arch=data.get("arch", "x86_64"), machine=data.get("machine"),
            boot=tuple(data["boot"]) if data.get("boot") else None, disks=tuple(disks), cdroms=tuple(cdroms),
            graphics=self.graphics(), interfaces=interfaces, console=self.console(),
            autostart=data.get("autostart", False), on_change=data.get("on_change", "defer"),
            max_vcpus=data.get("max_vcpus"), state=State(data.get("state", "running")),
            stop_timeout=float(data.get("stop_timeout", DEFAULT_STOP_TIMEOUT)), seed=seed,
            hostname=data.get("hostname"), guest_agent=access.guest_agent, ready=access.ready, groups=access.groups,
            vars=access.vars, ssh_user=access.ssh_user, ssh_port=access.ssh_port, host=self.host)

    def size(self, path: Path_, whole_mib: bool, limit: int) -> int | None:
        value = at(self.data, path)
        try:
            n = parse_size(value)
        except ValueError as exc:
            self.problem(path, str(exc))
            return None
        if n <= 0:
            self.problem(path, f"{value!r} is zero; expected a positive size")
            return None
        if whole_mib and n % (1024 * 1024):
            self.problem(path, f"{value!r} is not a whole number of MiB; libvirt would round it, so write e.g. "
                               f"{max(1, n // (1024 * 1024))}MiB")
            return None
        if n > limit:
            self.problem(path, f"{value!r} is more than {format_size(limit)}; is the unit right?")
            return None
        return n

    def target_of(self, j: int, kind: str, dev: dict[str, Any], prefix: str) -> str:
        """The device's target: as given (once per domain), else the next free one."""
        if "target" in dev:
            target = dev["target"]
            if target in self.used_targets:
                self.problem((kind, j, "target"), f"target {target!r} is used twice in this domain; expected each "
                                                  "device on its own target")
                return ""
        else:
            target = next_target(prefix, self.used_targets | self.explicit)
            if target is None:
                self.problem((kind, j), f"no free {prefix}X target is left on this bus; expected at most 26 devices")
                target = f"{prefix}?{j}"
        self.used_targets.add(target)
        return target

    def use_volume(self, path: Path_, key: tuple[str, str], user: str, what: str) -> None:
        """Record that `user` has volume `key`; a second user is a problem."""
        if key in self.seen.volumes:
            self.problem(path, f"volume {key[0]}/{key[1]} is already used by {self.seen.volumes[key]}; expected "
                               f"{what}")
        self.seen.volumes[key] = user

    def disks(self) -> list[Disk]:
        disks: list[Disk] = []
        for j, d in enumerate(self.data.get("disks", [])):
            disk = self.disk(j, d)
            if disk is not None:
                disks.append(disk)
        return disks

    def disk(self, j: int, d: dict[str, Any]) -> Disk | None:
        bus = d.get("bus", "virtio")
        target = self.target_of(j, "disks", d, _DISK_PREFIX[bus])
        if not target:
            return None
        fmt = d.get("format", "qcow2")
        pool = d.get("pool", "default")
        backing = backing_of(d["backing"], pool, self.images) if "backing" in d else None
        if backing is not None and fmt != "qcow2":
            self.problem(("disks", j, "format"), f"{fmt!r} cannot be an overlay; expected qcow2 for a disk with "
                                                 "backing")
        capacity = None
        if "size" in d:
            capacity = self.size(("disks", j, "size"), False, MAX_DISK)
            if capacity is None:
                return None
        elif backing is None:
            self.problem(("disks", j), "no size given; expected size (only an overlay, with backing, may leave it "
                                       "out to have the size of its base)")
            return None
        volume = d.get("name") or f"{self.name}-{target}.{'qcow2' if fmt == 'qcow2' else 'img'}"
        if "name" in d:
            try:
                check_name(volume)
            except ValueError as exc:
                self.problem(("disks", j, "name"), str(exc))
        self.use_volume(("disks", j), (pool, volume), f"domain {self.name!r}",
                        "each disk to have its own volume (give it a name)")
        if backing is not None and backing.kind != "path" and (backing.pool, backing.name) == (pool, volume):
            self.problem(("disks", j, "backing"), "a disk cannot be its own backing image; expected another volume")
        if d.get("rebuild") == "recreate" and d.get("keep"):
            self.problem(("disks", j, "rebuild"), "a disk with keep: true is never emptied, so it cannot be recreated "
                                                  "by a rebuild; expected rebuild: keep, or no keep")
        return Disk(target=target, pool=pool, volume=volume, size=capacity, format=fmt, bus=bus,
                    keep=d.get("keep", False), backing=backing, allow_replace=d.get("allow_replace", False),
                    rebuild=d.get("rebuild", ""))

    def cdroms(self) -> list[Cdrom]:
        cdroms: list[Cdrom] = []
        for j, c in enumerate(self.data.get("cdroms", [])):
            bus = c.get("bus", "sata")
            target = self.target_of(j, "cdroms", c, "hd" if bus == "ide" else "sd")
            cdroms.append(Cdrom(target=target, path=os.path.normpath(c["path"]), bus=bus))
        return cdroms

    def seed(self, disks: list[Disk], cdroms: list[Cdrom]) -> Seed | None:
        """The cloud-init seed, in its own volume, attached as one more cdrom."""
        ci = self.data["cloud_init"]
        pool = ci.get("pool") or (disks[0].pool if disks else "default")
        volume = f"{self.name}-cidata.iso"
        self.use_volume(("cloud_init",), (pool, volume), f"the cloud-init seed of domain {self.name!r}",
                        "the seed to have its own volume")
        seed = compose_seed(self.item, self.name, ci, pool, volume, self.problems, self.resolve_secrets)
        target = next_target("sd", self.used_targets | self.explicit)
        if target is None:
            self.problem(("cloud_init",), "no free sdX target is left for the seed's cdrom; expected at most 26 devices")
        else:
            self.used_targets.add(target)
            cdroms.append(Cdrom(target=target, path=None, bus="sata", pool=pool, volume=volume))
        return seed

    def check_boot(self) -> None:
        known = domain_fields()
        for j, dev in enumerate(self.data.get("boot") or ()):
            holder = BOOT_DEVICES.get(dev)
            left_out_ok = holder in UNMANAGED_WHEN_LEFT_OUT and holder not in self.data
            if holder and holder in known and not self.data.get(holder) and not left_out_ok:
                self.problem(("boot", j), f"boot from {dev} but the domain has no {holder}; expected a device to boot "
                                          f"from (add one to {holder} or remove {dev!r} from boot)")

    def note_references(self) -> None:
        for kind, path, default in REFERENCES:
            for where, value in values_at(self.data, path, default):
                self.seen.references.append((kind, value, self.item.origin_of(where)))

    def graphics(self) -> Graphics | None:
        if "graphics" not in self.data:
            return None
        g = self.data["graphics"]
        port = g.get("port", "auto")
        return Graphics(type=g.get("type", "vnc"), listen=g.get("listen"), port=None if port == "auto" else port)

    def interfaces(self) -> tuple[Interface, ...]:
        """The interfaces, each with a MAC of its own in the run: given, or derived."""
        interfaces = tuple(Interface(network=n["network"], model=n.get("model", "virtio"),
                                     mac=n["mac"].lower() if "mac" in n else None,
                                     derived_mac=None if "mac" in n else derived_mac(self.project, self.name, j),
                                     ip=n.get("ip"))
                           for j, n in enumerate(self.data["interfaces"]))
        for j, n in enumerate(interfaces):
            if n.ip is not None:
                self.check_reservation(j, n)
        for j, n in enumerate(interfaces):
            mac = n.mac or n.derived_mac
            if mac in self.seen.macs:
                where = ("interfaces", j, "mac") if n.mac else ("interfaces", j)
                what = f"MAC {mac}" if n.mac else f"the MAC derived for this interface ({mac})"
                hint = "or leave mac out" if n.mac else "give one of them a mac"
                self.problem(where, f"{what} is already used by {self.seen.macs[mac]}; expected each interface to "
                                    f"have its own ({hint})")
            self.seen.macs.setdefault(mac, f"domain {self.name!r}")
        return interfaces

    def check_reservation(self, j: int, iface: Interface) -> None:
        """A reserved ip is one address of its network's subnet, not the host's, outside the
        range DHCP hands out to anyone, and no other interface's."""
        path = ("interfaces", j, "ip")
        if iface.ip in self.seen.addresses:
            self.problem(path, f"{iface.ip} is already reserved for {self.seen.addresses[iface.ip]}; expected each "
                               "interface to have its own address")
        self.seen.addresses.setdefault(iface.ip, f"domain {self.name!r}")
        net = self.networks.get(iface.network)
        if net is None:
            return  # a network of the host: the plan says that reconcile does not change it
        subnet = netxml.subnet(net.ip, net.netmask)
        address = ipaddress.ip_address(iface.ip)
        if subnet is None:
            self.problem(path, f"network {net.name!r} has no address of its own, so nothing can be reserved on it; "
                               "expected ip (and dhcp) on the network")
        elif address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
            self.problem(path, f"{iface.ip} is not a host address of network {net.name!r} ({subnet}); expected one "
                               "inside it")
        elif iface.ip == net.ip:
            self.problem(path, f"{iface.ip} is the host's own address on network {net.name!r}; expected another")
        elif net.dhcp_start and net.dhcp_end and \
                ipaddress.ip_address(net.dhcp_start) <= address <= ipaddress.ip_address(net.dhcp_end):
            self.problem(path, f"{iface.ip} is inside the DHCP range {net.dhcp_start}-{net.dhcp_end} of network "
                               f"{net.name!r}, which is handed out to anyone; expected an address outside it")

    def console(self) -> Console | None:
        if "console" not in self.data:
            return None
        log = self.data["console"].get("log")
        return Console(log=os.path.normpath(log) if log else None)


def derived_mac(project: str, domain: str, position: int) -> str:
    """The MAC an interface without one gets when it is created: the same for the same
    project, domain and position, in QEMU's locally administered 52:54:00 range."""
    digest = hashlib.sha256(f"{project}\0{domain}\0{position}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def backing_of(value: str, pool: str, images: dict[str, ImageSpec]) -> Backing:
    """`backing:` names a declared image, else a path (absolute), else a volume in the disk's pool."""
    if value in images:
        return Backing("image", images[value].pool, value)
    if value.startswith("/"):
        return Backing("path", path=os.path.normpath(value))
    return Backing("volume", pool, value)


def next_target(prefix: str, used: set[str]) -> str | None:
    for letter in "abcdefghijklmnopqrstuvwxyz":
        if prefix + letter not in used:
            return prefix + letter
    return None
