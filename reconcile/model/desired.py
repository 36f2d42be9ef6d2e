"""What the specs ask for: the desired state of domains, disks, pools, networks and images.

A domain's `essence()` is the plain dict of the fields a spec can express, in the same shape
`codec.domain` reads from live XML, so that planning compares like with like. Immutable
data, no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import shown_path
from .guest import Ready


class State(str, enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    ABSENT = "absent"


DEFAULT_STOP_TIMEOUT = 60.0


def shown_source(source: str) -> str:
    """An image source as messages show it: without the password a URL may carry."""
    parts = urllib.parse.urlsplit(source)
    if "://" not in source or "@" not in parts.netloc:
        return source
    return urllib.parse.urlunsplit(parts._replace(netloc="(credentials)@" + parts.netloc.rsplit("@", 1)[1]))


def short_digest(data: bytes) -> str:
    """How content that may be secret is shown: enough of its SHA-256 to tell versions apart."""
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


SECRET_SALT = b"reconcile cloud-init seed"


def protected_digest(data: bytes) -> str:
    """How content holding a secret is shown and recorded: a slow, salted hash (scrypt, about
    30 ms and 8 MiB each), so a plan posted for review, a plan file or libvirt metadata
    cannot be used to find a short password by hashing guesses the way a SHA-256 could."""
    return "scrypt:" + hashlib.scrypt(data, salt=SECRET_SALT, n=2**13, r=8, p=1, dklen=8).hex()


def seed_whole_digest(files: tuple[tuple[str, bytes], ...], protected: Mapping[str, str]) -> str:
    """The digest of a whole seed, its secret files entering through their protected digests."""
    parts = (n.encode() + b"\0" + (protected[n].encode() if n in protected else d) + b"\0" for n, d in files)
    return "sha256:" + hashlib.sha256(b"".join(parts)).hexdigest()


@dataclass(frozen=True)
class Origin:
    """Where a resource was declared, for messages and for the ownership record."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        file = shown_path(self.file)
        return f"{file}:{self.line}:{self.column}" if self.line else file


@dataclass(frozen=True)
class Backing:
    """The base image an overlay disk is built on, as the spec names it.

    `image`: an image declared in the specs; `volume`: a volume already in the disk's pool;
    `path`: a file on the host. The planner turns each into the path qemu records in the
    overlay, since that path is what the live volume reports back.
    """

    kind: str  # image | volume | path
    pool: str = ""
    name: str = ""
    path: str = ""

    def __str__(self) -> str:
        return self.path if self.kind == "path" else f"{self.pool}/{self.name}"


@dataclass(frozen=True)
class Disk:
    """A disk attached to a domain: a volume in a pool, created by reconcile if missing."""

    target: str
    pool: str
    volume: str
    size: int | None  # bytes; None only for an overlay, which then has its base's size
    format: str = "qcow2"
    bus: str = "virtio"
    keep: bool = False
    backing: Backing | None = None
    allow_replace: bool = False  # a format or backing change may replace the volume (data lost)
    rebuild: str = ""  # what `reconcile rebuild` does to it: "" (the default), "keep" or "recreate"

    def essence(self) -> dict[str, Any]:
        return {"pool": self.pool, "volume": self.volume, "format": self.format, "bus": self.bus}

    @property
    def resets(self) -> bool:
        """Whether a rebuild replaces it: an overlay not kept (a fresh one on its base), or a
        disk that asks to be created empty again. A disk with data and no base is never emptied."""
        if self.rebuild == "recreate":
            return True
        return self.rebuild != "keep" and self.backing is not None and not self.keep


@dataclass(frozen=True)
class Cdrom:
    """An ISO attached read-only: a file on the host (`path`) or a pool volume (a seed)."""

    target: str
    path: str | None
    bus: str = "sata"
    pool: str | None = None
    volume: str | None = None

    def essence(self) -> dict[str, Any]:
        if self.path is None:
            return {"pool": self.pool, "volume": self.volume, "bus": self.bus}
        return {"path": self.path, "bus": self.bus}


@dataclass(frozen=True)
class Interface:
    """A network interface on a libvirt network.

    A MAC left out is not managed: a domain keeps the one it has. A new interface gets
    `derived_mac`, made from the project, the domain and the interface's position, so a domain
    destroyed and created again (or rebuilt) has the same MAC, and so the same DHCP lease.
    """

    network: str
    model: str = "virtio"
    mac: str | None = None
    derived_mac: str | None = field(default=None, compare=False)
    ip: str | None = None  # reserved on its network (DHCP host and DNS entries)

    def essence(self) -> dict[str, Any]:
        out = {"network": self.network, "model": self.model}
        if self.mac is not None:
            out["mac"] = self.mac
        return out


@dataclass(frozen=True, order=True)
class HostEntry:
    """A reservation on a network: DHCP gives `ip` to `mac`; DNS answers `name` (if any) with it."""

    ip: str
    mac: str
    name: str | None = None


@dataclass(frozen=True)
class Seed:
    """A cloud-init NoCloud seed: the files of an ISO labelled `cidata`, stored as a volume.

    `files` is (file name, content) in a fixed order; `digest` covers them all, so any change
    to user-data, meta-data or network-config is a change of the seed. The content may hold
    secrets: it is never rendered, only its digests are.
    """

    pool: str
    volume: str
    files: tuple[tuple[str, bytes], ...] = field(repr=False)
    digest: str
    instance_id: str
    meta_tail: bytes = field(default=b"", repr=False)  # meta-data after its instance-id line
    # The files that hold a secret, by their protected digests (computed once, when composed).
    protected: Mapping[str, str] = field(default_factory=dict, compare=False)

    def file_digests(self) -> dict[str, str]:
        return {name: self.protected.get(name) or short_digest(data) for name, data in self.files}

    def digests_of(self, files: Mapping[str, bytes]) -> dict[str, str]:
        """The digests of another copy of these files (the host's), hashed as this seed's
        are: a file that holds a secret here is taken to hold one there too."""
        mine = dict(self.files)
        out = {}
        for name, data in files.items():
            if name in self.protected:
                out[name] = self.protected[name] if mine.get(name) == data else protected_digest(data)
            else:
                out[name] = short_digest(data)
        return out

    def at_generation(self, generation: int) -> Seed:
        """The seed after `generation` rebuilds: the same files with a new instance-id, so
        that cloud-init runs as on a first boot. Generation 0 is the seed as composed."""
        if generation <= 0:
            return self
        instance_id = f"{self.instance_id}-r{generation}"
        meta = b"instance-id: " + json.dumps(instance_id).encode() + b"\n" + self.meta_tail
        files = tuple((name, meta if name == "meta-data" else data) for name, data in self.files)
        protected = dict(self.protected)
        if "meta-data" in protected:
            protected["meta-data"] = protected_digest(meta)
        return dataclasses.replace(self, files=files, digest=seed_whole_digest(files, protected),
                                   instance_id=instance_id, protected=protected)


@dataclass(frozen=True)
class Graphics:
    type: str = "vnc"
    listen: str | None = None
    port: int | None = None  # None: libvirt picks a free port (autoport)

    def essence(self) -> dict[str, Any]:
        out = {"type": self.type, "port": self.port if self.port is not None else "auto"}
        if self.listen is not None:  # left out: libvirt's default listen address is not managed
            out["listen"] = self.listen
        return out


@dataclass(frozen=True)
class Console:
    """A serial console on a pty (`virsh console NAME`), optionally logged to a file on the host.

    The log is how a lab user reads a boot after the fact and how the tests read the guest.
    A spec without `console` leaves the domain's serial ports alone; within a console,
    `log: None` means no log file, so removing `log` from a spec is a change.
    """

    log: str | None = None

    def essence(self) -> dict[str, Any]:
        return {"type": "pty", "log": self.log}


@dataclass(frozen=True)
class DomainSpec:
    name: str
    memory: int  # KiB, as libvirt counts
    vcpus: int
    origin: Origin
    type: str = "kvm"
    arch: str = "x86_64"
    machine: str | None = None
    current_memory: int | None = None  # KiB; None means equal to memory
    boot: tuple[str, ...] | None = None
    disks: tuple[Disk, ...] = ()
    cdroms: tuple[Cdrom, ...] = ()
    graphics: Graphics | None = None
    interfaces: tuple[Interface, ...] | None = None  # None: not managed
    console: Console | None = None
    autostart: bool = False
    state: State = State.RUNNING
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    on_change: str = "defer"  # restart | defer: what a change that needs a restart does to a running domain
    max_vcpus: int | None = None  # None: not managed (vcpus is the maximum for a new domain)
    hostname: str | None = None  # its name in the DNS of the networks where an interface has a reserved ip
    seed: Seed | None = None  # cloud-init; its cdrom is among `cdroms`
    guest_agent: bool | None = None  # the guest agent's channel; None: not managed
    # What the next tools read; none of it is part of the domain's definition on the host.
    ready: Ready | None = None  # None: the default (an address when on a DHCP network)
    groups: tuple[str, ...] = ()
    vars: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    ssh_user: str | None = None
    ssh_port: int | None = None
    host: str | None = None  # a name under `hosts`; None: the default connection

    def essence(self) -> dict[str, Any]:
        """The managed fields, in the same shape `domxml.essence_of` reads from live XML.

        A field left as None is not managed and is left out, so libvirt's value for it can
        never show up as a difference.
        """
        out: dict[str, Any] = {
            "type": self.type,
            "arch": self.arch,
            "machine": self.machine,
            "memory": self.memory,
            "current_memory": self.current_memory if self.current_memory is not None else self.memory,
            "vcpus": self.vcpus,
            "max_vcpus": self.max_vcpus,
            "boot": list(self.boot) if self.boot is not None else None,
            "disks": {d.target: d.essence() for d in self.disks},
            "cdroms": {c.target: c.essence() for c in self.cdroms},
            "graphics": self.graphics.essence() if self.graphics else {},
            "interfaces": [i.essence() for i in self.interfaces] if self.interfaces is not None else None,
            "console": self.console.essence() if self.console else None,  # None: not managed
            # The seed's instance-id, recorded in the domain's metadata: the running domain's
            # copy says which seed it booted with, so a seed change waits for (or, by the
            # restart policy, gets) a restart like any other change cloud-init only sees at boot.
            "cloud_init": {"instance_id": self.seed.instance_id} if self.seed else None,
            "guest_agent": self.guest_agent,
            "autostart": self.autostart,
        }
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class PoolSpec:
    name: str
    path: str
    origin: Origin
    host: str | None = None  # None: the default connection, and wherever the run needs it


@dataclass(frozen=True)
class NetworkSpec:
    """A libvirt network: isolated (no forwarding) or NAT. Created if missing, never changed;
    removed by `destroy` (or a prune) only when this project made it and no domain uses it."""

    name: str
    origin: Origin
    mode: str = "isolated"  # isolated | nat
    bridge: str | None = None
    ip: str | None = None
    netmask: str | None = None
    dhcp_start: str | None = None
    dhcp_end: str | None = None
    host: str | None = None  # None: the default connection, and wherever the run needs it

    def essence(self) -> dict[str, Any]:
        out = {"mode": self.mode, "bridge": self.bridge, "ip": self.ip, "netmask": self.netmask,
               "dhcp_start": self.dhcp_start, "dhcp_end": self.dhcp_end}
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class Reference:
    """A resource the specs use but do not declare: it must exist on the host."""

    kind: str  # "pool", "network", ...
    name: str
    origin: Origin  # the first place that uses it
    hint: str = ""  # e.g. a declared name it is close to


@dataclass(frozen=True)
class ImageSpec:
    """A base image imported into a pool from a local file or an http(s) URL: once, or
    with `refresh` again by a rebuild whenever its source changed (as a new version)."""

    name: str
    pool: str
    source: str
    origin: Origin
    format: str = "qcow2"
    sha256: str | None = None
    refresh: bool = False
    host: str | None = None  # None: the default connection, and wherever the run needs it


@dataclass(frozen=True)
class HostSpec:
    """A libvirt host of the run, by the name specs place resources on."""

    name: str
    uri: str
    origin: Origin


@dataclass(frozen=True)
class Desired:
    project: str
    domains: tuple[DomainSpec, ...] = ()
    pools: tuple[PoolSpec, ...] = ()
    networks: tuple[NetworkSpec, ...] = ()
    files: tuple[str, ...] = ()
    expected_on_host: tuple[Reference, ...] = ()
    images: tuple[ImageSpec, ...] = ()
    # The paths the run was given, absolute, and each file's absolute path: what a domain
    # records as its source, and what bounds a prune.
    roots: tuple[str, ...] = ()
    absolute_files: tuple[str, ...] = ()
    hosts: tuple[HostSpec, ...] = ()  # declared under `hosts`

    def absolute(self, file: str) -> str:
        """The absolute path of one of `files` (as it is recorded in ownership)."""
        return self._absolute.get(file, file)

    @functools.cached_property
    def _absolute(self) -> dict[str, str]:
        return dict(zip(self.files, self.absolute_files))

    def hosts_used(self) -> list[str | None]:
        """The hosts this run reads: the default connection (None) first when anything is
        on it, then the named hosts in name order (the order their locks are taken in)."""
        named = sorted({r.host for r in (*self.domains, *self.pools, *self.networks, *self.images)} - {None})
        here = self.on_host(None)  # a shared pool needed only on named hosts is not the default's
        default = not named or bool(here.domains or here.pools or here.networks or here.images)
        return ([None] if default else []) + named

    def on_host(self, host: str | None) -> Desired:
        """The part of the run one host is to match: its domains, and the pools, networks
        and images placed on it or, declared without a host (and not declared for this one),
        needed there by its domains or images. The default connection also takes what is
        declared without a host and needed on no named host, so a run without `hosts` is
        all on it, as it always was."""
        domains = tuple(d for d in self.domains if d.host == host)
        elsewhere = [d for d in self.domains if d.host is not None and d.host != host] if host is None else []

        def pick(items, needed: set[str], needed_elsewhere: set[str]) -> tuple:
            placed = {i.name for i in items if i.host is not None and i.host == host}
            return tuple(i for i in items if (i.host is not None and i.host == host) or (
                i.host is None and i.name not in placed
                and (i.name in needed or (host is None and i.name not in needed_elsewhere))))

        images = pick(self.images, _images_needed(domains), _images_needed(elsewhere))
        away = _images_needed(elsewhere)
        others = [i for i in self.images if i.host is not None or i.name in away] if host is None else []
        pools = pick(self.pools, _pools_needed(domains, images), _pools_needed(elsewhere, others))
        networks = pick(self.networks, _networks_needed(domains), _networks_needed(elsewhere))
        return dataclasses.replace(self, domains=domains, pools=pools, networks=networks, images=images,
                                   expected_on_host=self.expected_on_host if host is None else ())

    def pools_of_interest(self) -> set[str]:
        return ({p.name for p in self.pools} | {i.pool for i in self.images}
                | {d.pool for dom in self.domains for d in dom.disks}
                | {dom.seed.pool for dom in self.domains if dom.seed})

    def networks_of_interest(self) -> set[str]:
        return {n.name for n in self.networks} | {i.network for dom in self.domains for i in dom.interfaces or ()}

    def volumes_of_interest(self) -> set[tuple[str, str]]:
        """Every volume the plan needs to know about: disks, their bases, images, seeds."""
        out = {(i.pool, i.name) for i in self.images}
        for dom in self.domains:
            for d in dom.disks:
                out.add((d.pool, d.volume))
                if d.backing is not None and d.backing.kind != "path":
                    out.add((d.backing.pool, d.backing.name))
        return out | self.seeds_of_interest()

    def heads_of_interest(self) -> set[tuple[str, str]]:
        """The volumes whose first bytes the plan reads: images (finished or not), overlays
        (their real backing and size) and the pool volumes they are built on (their format)."""
        out = {(i.pool, i.name) for i in self.images}
        for dom in self.domains:
            for d in dom.disks:
                if d.backing is not None:
                    out.add((d.pool, d.volume))
                    if d.backing.kind != "path":
                        out.add((d.backing.pool, d.backing.name))
        return out

    def bases_of_interest(self) -> set[tuple[str, str]]:
        """The images and the pool volumes overlays are built on (their format and size)."""
        out = {(i.pool, i.name) for i in self.images}
        for dom in self.domains:
            out |= {(d.backing.pool, d.backing.name) for d in dom.disks if d.backing and d.backing.kind != "path"}
        return out

    def seeds_of_interest(self) -> set[tuple[str, str]]:
        return {(dom.seed.pool, dom.seed.volume) for dom in self.domains if dom.seed}


def _images_needed(domains) -> set[str]:
    return {d.backing.name for dom in domains for d in dom.disks if d.backing is not None and d.backing.kind == "image"}


def _pools_needed(domains, images) -> set[str]:
    return ({d.pool for dom in domains for d in dom.disks} | {dom.seed.pool for dom in domains if dom.seed}
            | {i.pool for i in images})


def _networks_needed(domains) -> set[str]:
    return {i.network for dom in domains for i in dom.interfaces or ()}
