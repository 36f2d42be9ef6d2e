"""The libvirt adapter: the only module that imports libvirt.

It reads the host into `Observed` with as few calls as it can (a handful of listings, one
XML read per domain and per volume of interest) and offers one method per primitive the
executor needs. Each primitive re-checks its precondition and returns False when there was
nothing to do, so a re-run after a crash converges instead of failing. Every libvirtError is
translated here into one of reconcile's `HostError` kinds, with the original as the cause.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import errno
import io
import itertools
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from typing import Any

import libvirt

from . import domxml, imagehead, netxml, seed
from .errors import (Conflict, ConnectionLost, HostError, HostUnavailable, InvalidRequest, NotFound,
                     PermissionDenied)
from .model import Observed, ObservedDomain, ObservedNetwork, ObservedPool, ObservedSeed, ObservedVolume

# libvirt prints every error to stderr by default; we report them ourselves.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_NOT_FOUND = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_ERR_NO_STORAGE_VOL,
              libvirt.VIR_ERR_NO_NETWORK}
_CONFLICT = {libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_DOM_EXIST, libvirt.VIR_ERR_STORAGE_VOL_EXIST,
             libvirt.VIR_ERR_STORAGE_POOL_BUILT, libvirt.VIR_ERR_OPERATION_FAILED}
# The connection itself failed ("client socket is closed", "Cannot recv data"): from the
# RPC layer whatever the code, or one of these codes.
_CONNECTION = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_INVALID_CONN}
_PERMISSION = {libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_OPERATION_DENIED, libvirt.VIR_ERR_AUTH_CANCELLED,
               libvirt.VIR_ERR_ACCESS_DENIED}
_INVALID = {libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_CONFIG_UNSUPPORTED, libvirt.VIR_ERR_INVALID_ARG,
            libvirt.VIR_ERR_XML_DETAIL, libvirt.VIR_ERR_OPERATION_UNSUPPORTED, libvirt.VIR_ERR_INTERNAL_ERROR,
            libvirt.VIR_ERR_NO_SUPPORT}
# A system call in libvirtd failed with this errno (libvirt passes it along as int1): the
# kernel asks to try again. Seen in CI as "failed to load cgroup BPF prog: Resource
# temporarily unavailable" when starting a domain while others were being torn down.
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EINTR}
_PERMISSION_ERRNOS = {errno.EACCES, errno.EPERM}

_CHUNK = 256 * 1024
_LOCK_TAG = "{http://reconcile.dev/xmlns/lock/1}lock"
ET.register_namespace("reconcile-lock", "http://reconcile.dev/xmlns/lock/1")

_UNDEFINE_FLAGS_BASIC = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
_UNDEFINE_FLAGS = (_UNDEFINE_FLAGS_BASIC | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                   | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA", 0))


def translate(exc: libvirt.libvirtError, subject: str = "") -> HostError:
    """A libvirtError as one of our kinds, keeping libvirt's own words in the message."""
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    transient = False
    if exc.get_error_domain() == libvirt.VIR_FROM_RPC or code in _CONNECTION:
        cls: type[HostError] = ConnectionLost
        message = f"lost the connection to libvirtd ({message})"
    elif code == libvirt.VIR_ERR_SYSTEM_ERROR:
        # A system call in libvirtd failed; the connection is fine and the errno says more.
        number = exc.get_int1()
        cls = PermissionDenied if number in _PERMISSION_ERRNOS else HostError
        transient = number in _TRANSIENT_ERRNOS
    elif code in _NOT_FOUND:
        cls = NotFound
    elif code in _PERMISSION:
        cls = PermissionDenied
    elif code in _CONFLICT:
        cls = Conflict
    elif code in _INVALID:
        cls = InvalidRequest
    else:
        cls = HostError
    err = cls(message, subject, transient=transient)
    err.__cause__ = exc
    return err


@contextlib.contextmanager
def wrapped(subject: str) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        raise translate(exc, subject) from exc


class LibvirtHost:
    """One connection to one libvirt URI. Safe to share between executor threads."""

    def __init__(self, uri: str):
        self.uri = uri
        self._in_process = uri.startswith("test:")
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        self._readers: cf.ThreadPoolExecutor | None = None
        self._opening: tuple[threading.Thread, list] | None = None

    def connect_early(self) -> None:
        """Open the connection in the background.

        Called before the specs load, so that the two overlap. Nothing more happens in
        that thread: whatever it does after the open waits for the GIL until the specs
        are loaded (starting the reader threads there held up the first reads). A failure
        is kept for the first use of the connection, after the specs have been checked, so
        a spec error is still reported first and alone.
        """
        if self._conn is not None or self._opening is not None or self._in_process:
            return
        outcome: list = []
        thread = threading.Thread(target=self._open_early, args=(outcome,), name="reconcile-connect", daemon=True)
        self._opening = (thread, outcome)
        thread.start()

    def _open_early(self, outcome: list) -> None:
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            outcome.append(exc)
            return
        with self._lock:
            if self._opening is None or self._opening[1] is not outcome:
                conn.close()  # closed (given up) meanwhile
                return
            self._conn = conn

    @property
    def conn(self) -> libvirt.virConnect:
        opening = self._opening
        if opening is not None:
            opening[0].join()
            self._opening = None
            if opening[1]:
                raise self._cannot_connect(opening[1][0])
        with self._lock:
            if self._conn is None:
                try:
                    self._conn = libvirt.open(self.uri)
                except libvirt.libvirtError as exc:
                    raise self._cannot_connect(exc) from exc
            return self._conn

    def _cannot_connect(self, exc: libvirt.libvirtError) -> HostError:
        """Why the connection could not be opened, said as what fits the cause: a URI
        libvirt does not take, a host that cannot be reached, a daemon that is not running
        here, or access refused."""
        subject, message = f"connect to {self.uri}", exc.get_error_message()
        parts = urllib.parse.urlsplit(self.uri)
        remote = "+" in parts.scheme and not parts.scheme.endswith(("+unix", "+ext")) or bool(parts.hostname)
        refused = (exc.get_error_code() == libvirt.VIR_ERR_SYSTEM_ERROR and exc.get_int1() in _PERMISSION_ERRNOS
                   or isinstance(translate(exc), PermissionDenied))  # the socket's mode, or polkit
        err: HostError
        if "://" not in self.uri or exc.get_error_code() in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INTERNAL_ERROR,
                                                             libvirt.VIR_ERR_INVALID_ARG):
            err = InvalidRequest(f"{message} (libvirt does not take this URI; expected one such as qemu:///system, "
                                 "qemu:///session or qemu+ssh://USER@HOST/system)", subject)
        elif refused:
            err = PermissionDenied(f"{message} (run as root, or as a member of the group that owns libvirtd's "
                                   "socket, often `libvirt`, or allow the user in polkit for "
                                   "org.libvirt.unix.manage)", subject)
        elif remote:
            where = parts.hostname or "the host"
            extra = ", that sshd runs there and this user's key is accepted" if "ssh" in parts.scheme else ""
            err = HostUnavailable(f"{message} (cannot reach libvirtd on {where}: check the host name, that the "
                                  f"host is up and runs libvirtd{extra})", subject)
        else:
            err = HostUnavailable(f"{message} (libvirtd does not answer on this machine: start it, e.g. "
                                  "`systemctl start libvirtd`, or `libvirtd -d` where there is no systemd)", subject)
        err.__cause__ = exc
        return err

    def reconnect(self) -> None:
        """Drop a connection that broke; the next call opens a new one."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None

    def _reader_pool(self) -> cf.ThreadPoolExecutor:
        """The reader threads (see `_reads`); the caller holds `_lock`."""
        if self._readers is None:
            self._readers = cf.ThreadPoolExecutor(max_workers=_READERS - 1, thread_name_prefix="reconcile-read")
        return self._readers

    def close(self) -> None:
        """Close the connection. One still being opened early (the specs failed while a slow
        host was answering) is closed by its thread once open: the exit does not wait."""
        with self._lock:
            self._opening = None
            if self._readers is not None:
                self._readers.shutdown(wait=False)  # idle: its threads end on their own
                self._readers = None
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None

    # -- observe ---------------------------------------------------------------------------

    def observe(self, pools: Iterable[str] = (), volumes: Iterable[tuple[str, str]] | None = (),
                live: Iterable[str] | None = None, seeds: Iterable[tuple[str, str]] = (),
                heads: Iterable[tuple[str, str]] = (), machines: bool = True,
                networks: Iterable[str] | None = None, project: str | None = None) -> Observed:
        """Read the host. `pools` and `volumes` name what the specs care about beyond domains.

        `volumes=None` reads every volume of every active pool (export needs to know which
        pool volume a disk's file is). `live` names the running domains whose live XML is read
        too (None: all of them), since only those the specs name can have pending changes.
        The content of the `seeds` volumes is read too (a few dozen KiB each), so a seed is
        compared by its files, never rebuilt to find out, and the first bytes of `heads`
        (images, overlays and their bases): what the image itself says of its format, size
        and backing, since libvirt's own record of a volume lags what was written into it.
        `machines`: whether any spec names a machine type, whose aliases are then read.
        `networks` names the networks of interest (None: all of them). With `project` (and
        `live` not None), the domains observed are those in `live` and those the project
        manages: a host shared with other work may hold many more, whose XML is read (it says
        who manages them) but not parsed when it carries no ownership record at all.

        The reads go in rounds (the listings; each pool's path and volumes; one XML per
        domain, volume and network), the calls of a round several at a time (see `_reads`);
        parsing waits until a round is in.
        """
        live_wanted = None if live is None else set(live)
        every = volumes is None
        seeds, heads = set(seeds), set(heads)
        wanted = set(volumes or ()) | seeds | heads
        conn = self.conn
        listings: dict[str, tuple] = {
            "domains": (conn.listAllDomains, 0),
            "active": (conn.listAllDomains, libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE),
            "autostart": (conn.listAllDomains, libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART),
            "pools": (conn.listAllStoragePools, 0),
            "active pools": (conn.listAllStoragePools, libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE),
        }
        nets_wanted = None if networks is None else set(networks)
        if nets_wanted is None or nets_wanted:
            listings["networks"] = (conn.listAllNetworks, 0)
            listings["active networks"] = (conn.listAllNetworks, libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE)
            listings["autostart networks"] = (conn.listAllNetworks, libvirt.VIR_CONNECT_LIST_NETWORKS_AUTOSTART)
        if machines:
            listings["capabilities"] = (conn.getCapabilities,)
        with wrapped("read the host"):
            listed = _values(self._reads(listings))
        all_domains, all_pools = listed["domains"], listed["pools"]
        # A pool or network of interest that is not there yet may be created: then the others'
        # paths, addresses and bridges are read too, so that a clash is refused at plan time.
        listed_nets = {n.name() for n in listed.get("networks", ())}
        if nets_wanted and not nets_wanted <= listed_nets:
            nets_wanted = None
        all_nets = [n for n in listed.get("networks", ()) if nets_wanted is None or n.name() in nets_wanted]
        active = {d.name() for d in listed["active"]}
        autostart = {d.name() for d in listed["autostart"]}
        active_pools = {p.name() for p in listed["active pools"]}
        wanted_pools = {p.name() for p in all_pools} if every else set(pools) | {p for p, _ in wanted}
        if not wanted_pools <= {p.name() for p in all_pools}:
            wanted_pools |= {p.name() for p in all_pools}

        # Round two: the path and the volumes of each pool of interest.
        pool_reads: dict[tuple[str, str], tuple] = {}
        for pool in all_pools:
            if pool.name() in wanted_pools:  # only these need their path: one read fewer per other pool
                pool_reads[("xml", pool.name())] = (pool.XMLDesc, 0)
                if pool.name() in active_pools:
                    pool_reads[("volumes", pool.name())] = (pool.listAllVolumes, 0)
        pool_results = self._reads(pool_reads)
        observed_pools: dict[str, ObservedPool] = {}
        for pool in all_pools:
            name = pool.name()
            xml = pool_results.get(("xml", name), "")
            if _gone(xml, (libvirt.VIR_ERR_NO_STORAGE_POOL,), f"read pool {name}"):
                continue
            path = ET.fromstring(xml).findtext("target/path", "") if xml else ""
            observed_pools[name] = ObservedPool(name, name in active_pools, path)
        vol_objects: dict[tuple[str, str], libvirt.virStorageVol] = {}
        for (what, name), vols in pool_results.items():
            if what != "volumes":
                continue
            # removed or stopped while we looked: it has no volumes to report
            if _gone(vols, (libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_ERR_OPERATION_INVALID),
                     f"list volumes of pool {name}"):
                continue
            vol_objects.update(((name, v.name()), v) for v in vols if every or (name, v.name()) in wanted)

        # Round three: one XML per domain, running domain of interest, volume of interest and
        # network. libvirtd answers the reads of one pool's volumes one at a time, so those are
        # spread among the others, which it answers in parallel.
        inactive = libvirt.VIR_DOMAIN_XML_INACTIVE
        others: list[tuple[tuple, tuple]] = [(("domain", d.name()), (d.XMLDesc, inactive)) for d in all_domains]
        others += [(("live", d.name()), (d.XMLDesc, 0)) for d in all_domains
                   if d.name() in active and (live_wanted is None or d.name() in live_wanted)]
        others += [(("network", n.name()), (_network_xml, n)) for n in all_nets]
        vol_calls = [(("volume", key), (v.XMLDesc, 0)) for key, v in vol_objects.items()]
        xml_of = self._reads(dict(_interleave(vol_calls, others)))

        observed_volumes: dict[tuple[str, str], ObservedVolume] = {}
        for key in vol_objects:
            xml = xml_of[("volume", key)]
            if _gone(xml, _VOLUME_GONE, f"read volume {key[0]}/{key[1]}"):
                continue
            observed_volumes[key] = _volume(key[0], key[1], xml)

        # Seeds (a few dozen KiB each) and image heads (a few KiB), through streams.
        observed_seeds: dict[tuple[str, str], ObservedSeed] = {}
        present = set(observed_volumes)
        streams = {("seed", key): (self._download, vol_objects[key], observed_volumes[key].capacity, seed.MAX_SEED_BYTES)
                   for key in sorted(seeds & present)}
        streams.update({("head", key): (self._download, vol_objects[key], imagehead.HEAD_BYTES, imagehead.HEAD_BYTES)
                        for key in sorted(heads & present)})
        for (what, key), data in self._reads(streams).items():
            if _gone(data, _VOLUME_GONE, f"read volume {key[0]}/{key[1]}"):
                observed_volumes.pop(key, None)
                observed_seeds.pop(key, None)
                continue
            if key not in observed_volumes:
                continue
            if what == "seed":
                files = seed.read_iso(data) if data is not None else None
                iid = seed.instance_id_of(files.get("meta-data", b"")) if files else None
                observed_seeds[key] = ObservedSeed(files, iid)
            else:
                observed_volumes[key] = dataclasses.replace(observed_volumes[key], head=imagehead.parse(data))

        by_path = {v.path: (v.pool, v.name) for v in observed_volumes.values()}
        observed_domains: dict[str, ObservedDomain] = {}
        # Which domains, of any project or none, have each volume of interest as a disk: one
        # that is attached elsewhere is never attached again, nor deleted.
        users: dict[tuple[str, str], list[str]] = {}
        scoped = project is not None and live_wanted is not None
        for dom in all_domains:
            name = dom.name()
            xml = xml_of[("domain", name)]
            if _gone(xml, (libvirt.VIR_ERR_NO_DOMAIN,), f"read domain {name}"):
                continue
            if scoped and name not in live_wanted and domxml.NAMESPACE not in xml:
                _note_users(users, name, xml, by_path)
                continue  # neither named nor managed by anyone
            root = ET.fromstring(xml)
            ownership = domxml.read_ownership(root)
            if scoped and name not in live_wanted and (ownership is None or ownership.project != project):
                _note_users(users, name, xml, by_path)
                continue  # another project's
            essence = domxml.essence_of_element(root, by_path)
            for disk in essence["disks"].values():
                if disk["pool"] is not None:
                    users.setdefault((disk["pool"], disk["volume"]), []).append(name)
            essence["autostart"] = name in autostart
            live_essence = None
            running = xml_of.get(("live", name))
            stopped = (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID)
            if running is not None and not _gone(running, stopped, f"read domain {name}"):
                # The running domain's own XML: a deferred change shows as config != live.
                live_essence = domxml.essence_of_element(ET.fromstring(running), by_path)
                live_essence["autostart"] = essence["autostart"]
            observed_domains[name] = ObservedDomain(name=name, uuid=dom.UUIDString(), running=name in active,
                                                    essence=essence, ownership=ownership, xml=xml,
                                                    live_essence=live_essence)

        active_nets = {n.name() for n in listed.get("active networks", ())}
        autostart_nets = {n.name() for n in listed.get("autostart networks", ())}
        observed_networks: dict[str, ObservedNetwork] = {}
        for net in all_nets:
            name = net.name()
            xml = xml_of[("network", name)]
            if _gone(xml, (libvirt.VIR_ERR_NO_NETWORK,), f"read network {name}"):
                continue
            observed_networks[name] = ObservedNetwork(name, name in active_nets, name in autostart_nets,
                                                      netxml.essence_of(xml), netxml.owner_project(xml))

        return Observed(uri=self.uri, domains=observed_domains, pools=observed_pools, volumes=observed_volumes,
                        networks=observed_networks, seeds=observed_seeds,
                        attached={k: tuple(sorted(v)) for k, v in users.items() if k in observed_volumes},
                        machine_aliases=_machine_aliases(listed["capabilities"]) if machines else {})

    def _reads(self, calls: dict[Any, tuple]) -> dict[Any, Any]:
        """Each `key: (function, *args)` called, several at a time: the result or the
        libvirtError it raised, by key.

        One XML read per domain and per volume is the bulk of a plan's time, and libvirtd
        answers reads in parallel. The calls are dealt round-robin into up to `_READERS`
        shares, one of them read by this thread and each other by a reader thread, one
        after another: a task per call costs as much CPU again as the reads themselves.
        (Sixty XML reads of twenty running domains, here: 7.3 ms one by one, 4.3 ms in five
        shares, 4.1 ms in eight.) The threads make the calls and nothing else: parsing the
        answers there too would have them queue for the GIL. A round of a few calls (the
        listings) is quicker one by one than handed to threads, and an in-process driver
        (test:///) has no round trip to overlap: both read one by one.
        """
        def share(items: list[tuple]) -> list:
            out = []
            for item in items:
                try:
                    out.append(item[0](*item[1:]))
                except libvirt.libvirtError as exc:
                    out.append(exc)
            return out

        items = list(calls.values())
        n = 1 if self._in_process or len(items) < _FEW else min(_READERS, len(items))
        if n < 2:
            return dict(zip(calls, share(items)))
        with self._lock:
            readers = self._reader_pool()
        others = [readers.submit(share, items[i::n]) for i in range(1, n)]
        results: list[list] = [share(items[0::n])] + [f.result() for f in others]
        ordered = [None] * len(items)
        for i, got in enumerate(results):
            ordered[i::n] = got
        return dict(zip(calls, ordered))

    # -- networks ----------------------------------------------------------------------------

    def ensure_network(self, name: str, xml: str) -> bool:
        """Define (if missing), start and mark autostart a network; False if it was all done."""
        changed = False
        try:
            net = self.conn.networkLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                raise translate(exc, f"look up network {name}") from exc
            with wrapped(f"define network {name}"):
                net = self.conn.networkDefineXML(xml)
            changed = True
        with wrapped(f"start network {name}"):
            if not net.isActive():
                net.create()
                changed = True
            if not net.autostart():
                net.setAutostart(1)
                changed = True
        return changed

    # -- domains -----------------------------------------------------------------------------

    def _domain(self, name: str) -> libvirt.virDomain | None:
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise translate(exc, f"look up domain {name}") from exc

    def domain_exists(self, name: str) -> bool:
        return self._domain(name) is not None

    def domain_running(self, name: str) -> bool:
        dom = self._domain(name)
        with wrapped(f"read state of domain {name}"):
            return bool(dom and dom.isActive())

    def define_domain(self, name: str, xml: str, autostart: bool) -> None:
        with wrapped(f"define domain {name}"):
            dom = self.conn.defineXML(xml)
        with wrapped(f"set autostart of domain {name}"):
            if bool(dom.autostart()) != autostart:
                dom.setAutostart(1 if autostart else 0)

    def apply_live(self, name: str, ops: list[tuple]) -> list[str]:
        """Apply live-class changes to a running domain; says what it did (nothing if it is off)."""
        dom = self._domain(name)
        done: list[str] = []
        if dom is None:
            raise NotFound("no such domain", f"change running domain {name}")
        with wrapped(f"change running domain {name}"):
            if not dom.isActive():
                return done
            for op in ops:
                if op[0] == "vcpus":
                    dom.setVcpusFlags(op[1], libvirt.VIR_DOMAIN_AFFECT_LIVE)
                    done.append(f"{op[1]} vcpus plugged in")
                elif op[0] == "memory":
                    dom.setMemoryFlags(op[1], libvirt.VIR_DOMAIN_AFFECT_LIVE)
                    done.append(f"balloon set to {op[1]} KiB")
                elif op[0] == "media":
                    target, path = op[1], op[2]
                    root = ET.fromstring(dom.XMLDesc(0))
                    disk = next((d for d in root.findall("devices/disk")
                                 if d.get("device") == "cdrom" and d.find(f"target[@dev='{target}']") is not None), None)
                    if disk is None:
                        continue
                    for old in disk.findall("source"):
                        disk.remove(old)
                    disk.set("type", "file")
                    ET.SubElement(disk, "source", {"file": path})
                    dom.updateDeviceFlags(ET.tostring(disk, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
                    done.append(f"media in {target} changed")
        return done

    def record_state(self, name: str, state: str) -> None:
        """Write the state a start or stop reached into reconcile's metadata of the domain
        (its persistent config), so drift is told from a start that never happened."""
        dom = self._domain(name)
        if dom is None:
            return
        config = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        with wrapped(f"record the state of domain {name}"):
            try:
                current = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domxml.NAMESPACE, config)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                    return
                raise
            updated = domxml.with_applied_state(current, state)
            if updated is not None:
                dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, updated, domxml.PREFIX, domxml.NAMESPACE, config)

    def start_domain(self, name: str) -> bool:
        dom = self._domain(name)
        if dom is None:
            raise NotFound("no such domain", f"start domain {name}")
        with wrapped(f"start domain {name}"):
            if dom.isActive():
                return False
            dom.create()
        return True

    def stop_domain(self, name: str, timeout: float, force: bool = False) -> str:
        """Shut down by ACPI, force off after `timeout` seconds; says how it ended.

        Returns "already stopped", "graceful" or "forced". A domain that goes down on its
        own at the very moment we force it counts as graceful, not as an error.
        """
        dom = self._domain(name)
        if dom is None:
            return "already stopped"
        with wrapped(f"stop domain {name}"):
            if not dom.isActive():
                return "already stopped"
            if not force and timeout > 0:
                try:
                    dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() == libvirt.VIR_ERR_INVALID_ARG:
                        dom.shutdown()  # drivers without the ACPI flag pick their own method
                    elif exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                        raise
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    if not _active(dom):
                        return "graceful"
                    time.sleep(0.2)
            try:
                dom.destroy()
            except libvirt.libvirtError as exc:
                # It went down on its own between the last look and the power-off (a
                # transient domain is gone altogether, which `_active` reads as stopped).
                codes = (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID)
                if exc.get_error_code() in codes and not _active(dom):
                    return "graceful" if not force and timeout > 0 else "already stopped"
                raise
        return "forced"

    def undefine_domain(self, name: str) -> bool:
        dom = self._domain(name)
        if dom is None:
            return False
        with wrapped(f"undefine domain {name}"):
            if dom.isActive():
                dom.destroy()
            # Drivers that know no NVRAM or checkpoints refuse those flags; fewer will do there.
            for flags in (_UNDEFINE_FLAGS, _UNDEFINE_FLAGS_BASIC, 0):
                try:
                    dom.undefineFlags(flags)
                    return True
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                        return False
                    if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG or flags == 0:
                        raise
        return True

    # -- the run lock ------------------------------------------------------------------------
    # A lock is an inactive libvirt network named after the project. libvirtd refuses to
    # define a second network of the same name with another UUID, atomically, for every
    # client of the daemon: that is the mutual exclusion, and it holds across machines.
    # The holder (host, pid, since, heartbeat) is kept in the network's metadata.

    def take_lock(self, name: str, holder: dict[str, str]) -> tuple[str | None, dict[str, str]]:
        """Try once: (token, holder) when taken, else (None, the current holder)."""
        try:
            net = self.conn.networkDefineXML(_lock_xml(name, holder))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_ERR_NETWORK_EXIST):
                raise translate(exc, f"take the lock {name}") from exc
            return None, self.read_lock(name) or {}
        with wrapped(f"take the lock {name}"):
            return net.UUIDString(), holder

    def read_lock(self, name: str) -> dict[str, str] | None:
        """The holder of lock `name` (with its "token"), None when nobody holds it."""
        try:
            net = self.conn.networkLookupByName(name)
            root = ET.fromstring(net.XMLDesc(0))
            token = net.UUIDString()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return None
            raise translate(exc, f"read the lock {name}") from exc
        el = root.find(f"metadata/{_LOCK_TAG}")
        return dict(el.attrib if el is not None else {}, token=token)

    def renew_lock(self, name: str, token: str, holder: dict[str, str]) -> bool:
        """Rewrite the holder record (the heartbeat); False if the lock is no longer ours."""
        try:
            self.conn.networkLookupByUUIDString(token)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return False  # broken by someone: never bring it back
            raise translate(exc, f"renew the lock {name}") from exc
        try:
            self.conn.networkDefineXML(_lock_xml(name, holder, token))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_ERR_NETWORK_EXIST):
                return False
            raise translate(exc, f"renew the lock {name}") from exc
        return True

    def drop_lock(self, name: str, token: str) -> bool:
        """Remove lock `name` if it is still the one identified by `token`."""
        try:
            net = self.conn.networkLookupByUUIDString(token)
            if net.name() != name:
                return False
            net.undefine()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return False
            raise translate(exc, f"release the lock {name}") from exc
        return True

    # -- storage -----------------------------------------------------------------------------

    def _pool(self, name: str) -> libvirt.virStoragePool | None:
        try:
            return self.conn.storagePoolLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                return None
            raise translate(exc, f"look up pool {name}") from exc

    def ensure_pool(self, name: str, path: str) -> bool:
        """Define, build, start and autostart a directory pool; False if it was all done."""
        changed = False
        pool = self._pool(name)
        if pool is None:
            root = ET.Element("pool", {"type": "dir"})
            ET.SubElement(root, "name").text = name
            ET.SubElement(ET.SubElement(root, "target"), "path").text = path
            with wrapped(f"define pool {name}"):
                pool = self.conn.storagePoolDefineXML(ET.tostring(root, encoding="unicode"), 0)
            changed = True
            with wrapped(f"build pool {name} at {path}"):
                pool.build(0)
            with wrapped(f"set autostart of pool {name}"):
                pool.setAutostart(1)
        with wrapped(f"start pool {name}"):
            if not pool.isActive():
                # A run cut short between define and build, or a directory removed by hand:
                # building a dir pool only creates its directory, so it is safe to repeat.
                if ET.fromstring(pool.XMLDesc(0)).get("type") == "dir":
                    pool.build(0)
                pool.create(0)
                changed = True
            if not pool.autostart():
                pool.setAutostart(1)
                changed = True
        return changed

    def _volume(self, pool_name: str, name: str) -> libvirt.virStorageVol | None:
        pool = self._pool(pool_name)
        if pool is None:
            raise NotFound(f"pool {pool_name} does not exist", f"volume {pool_name}/{name}")
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise translate(exc, f"look up volume {pool_name}/{name}") from exc

    def _create(self, pool_name: str, name: str, root: ET.Element) -> libvirt.virStorageVol:
        pool = self._pool(pool_name)
        if pool is None:
            raise NotFound(f"pool {pool_name} does not exist", f"create volume {pool_name}/{name}")
        try:
            return pool.createXML(ET.tostring(root, encoding="unicode"), 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_STORAGE_VOL_EXIST:
                raise Conflict(f"a file named {name} already exists in the pool's directory but libvirt did not list "
                               f"it; it was not created by reconcile, so it is left alone (run `virsh pool-refresh "
                               f"{pool_name}` to make libvirt see it, or remove it)",
                               f"create volume {pool_name}/{name}") from exc
            raise translate(exc, f"create volume {pool_name}/{name}") from exc

    def _backing_of(self, path: str, declared: str | None, subject: str) -> tuple[str, int]:
        """Format and virtual size of the base image at `path`, from the image's own header.

        libvirt's record of a volume is what it was told when the volume was made, until the
        pool is next refreshed: a base uploaded a moment ago is recorded as an empty raw
        volume. So the format is the one the spec declares (or, for a base reconcile did not
        import, what the header says), and the size is what the header says.
        """
        try:
            vol = self.conn.storageVolLookupByPath(path)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise NotFound(f"the base image {path} is not a volume of any storage pool; put it in a pool's "
                               "directory (and refresh the pool) or declare it under 'images'", subject) from exc
            raise translate(exc, subject) from exc
        with wrapped(subject):
            head = imagehead.parse(self._download(vol, imagehead.HEAD_BYTES, imagehead.HEAD_BYTES) or b"")
            if head.unfinished:
                raise Conflict(f"the base image {path} is an import that never finished; apply again to redo it",
                               subject)
            if declared is not None and head.format != declared:
                raise InvalidRequest(f"the base image {path} holds a {head.format} image, not the {declared} the "
                                     "spec says", subject)
            size = head.virtual_size if head.virtual_size is not None else vol.info()[1]
        return head.format, size

    def create_volume(self, pool_name: str, name: str, capacity: int | None, fmt: str,
                      backing: dict | None = None) -> bool:
        """Create an empty volume, or a qcow2 overlay on `backing` ({path, format}).

        An overlay of no given capacity gets its base's virtual size. Its backing format is
        the one given (the image's declared format), else what the base's header says; never
        libvirt's record of the base, which may not have caught up with its content.
        """
        if self._volume(pool_name, name) is not None:
            return False
        subject = f"create volume {pool_name}/{name}"
        root = ET.Element("volume")
        ET.SubElement(root, "name").text = name
        base_format = None
        if backing is not None:
            base_format, base_capacity = self._backing_of(backing["path"], backing.get("format"), subject)
            capacity = capacity if capacity is not None else base_capacity
        ET.SubElement(root, "capacity", {"unit": "bytes"}).text = str(capacity)
        ET.SubElement(root, "allocation", {"unit": "bytes"}).text = "0"
        ET.SubElement(ET.SubElement(root, "target"), "format", {"type": fmt})
        if backing is not None:
            store = ET.SubElement(root, "backingStore")
            ET.SubElement(store, "path").text = backing["path"]
            ET.SubElement(store, "format", {"type": base_format})
        self._create(pool_name, name, root)
        return True

    def grow_volume(self, pool_name: str, name: str, capacity: int, domain: str | None = None,
                    target: str | None = None) -> bool:
        """Grow a volume in place. A running domain's disk is grown through the domain (qemu
        holds the image and its lock), so the guest sees the new size at once."""
        vol = self._volume(pool_name, name)
        if vol is None:
            raise NotFound("no such volume", f"grow volume {pool_name}/{name}")
        with wrapped(f"grow volume {pool_name}/{name}"):
            current = vol.info()[1]
            if current >= capacity:
                return False
            dom = self._domain(domain) if domain else None
            if dom is not None and target and dom.isActive():
                dom.blockResize(target, capacity, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
            else:
                vol.resize(capacity, 0)
        return True

    def upload_volume(self, pool_name: str, name: str, source, fmt: str) -> bool:
        """Create a volume from a stream (`source.read(n)`, b'' at the end) through libvirt.

        Works the same for a remote host. If reading the source fails (a broken download, a
        checksum that does not match) the upload is aborted and the volume deleted, so a
        failed import leaves nothing in the pool. The content must be of format `fmt`.

        Until the whole image is in place its first `imagehead.HEAD_BYTES` hold reconcile's
        marker, and the real head is written last, in one message: an import cut short (a
        killed process, a lost connection, a failed delete) is recognisable as unfinished by
        its content, raw or qcow2, and is redone instead of being used.
        """
        if self._volume(pool_name, name) is not None:
            return False
        subject = f"import volume {pool_name}/{name}"
        size = imagehead.HEAD_BYTES
        head = b""
        while len(head) < size:
            chunk = source.read(size - len(head))
            if not chunk:
                break
            head += chunk
        found = imagehead.parse(head).format if head else "raw"
        if found != fmt:  # a qcow2 taken for raw would let a guest read host files
            raise InvalidRequest(f"the source is a {found} image, the spec says {fmt}; fix 'format' or the source",
                                 subject)
        root = ET.Element("volume")
        ET.SubElement(root, "name").text = name
        ET.SubElement(root, "capacity", {"unit": "bytes"}).text = "0"
        ET.SubElement(ET.SubElement(root, "target"), "format", {"type": "raw"})
        vol = self._create(pool_name, name, root)
        try:
            if len(head) == size:
                self._send(vol, io.BytesIO(imagehead.unfinished_marker(size)), subject, offset=0, length=size)
                self._send(vol, source, subject, offset=size)
            self._send(vol, io.BytesIO(head), subject, offset=0, length=len(head))
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                vol.delete(0)
            raise
        return True

    def read_head(self, pool_name: str, name: str) -> imagehead.ImageHead | None:
        """What a volume's first bytes say of it; None when there is no such volume."""
        vol = self._volume(pool_name, name)
        if vol is None:
            return None
        with wrapped(f"read volume {pool_name}/{name}"):
            return imagehead.parse(self._download(vol, imagehead.HEAD_BYTES, imagehead.HEAD_BYTES) or b"")

    def write_volume(self, pool_name: str, name: str, data: bytes) -> None:
        """Make the volume hold exactly `data` (a seed ISO): created anew at its size."""
        if self._volume(pool_name, name) is not None:
            self.delete_volume(pool_name, name)
        root = ET.Element("volume")
        ET.SubElement(root, "name").text = name
        ET.SubElement(root, "capacity", {"unit": "bytes"}).text = str(len(data))
        ET.SubElement(ET.SubElement(root, "target"), "format", {"type": "raw"})
        vol = self._create(pool_name, name, root)
        try:
            self._send(vol, io.BytesIO(data), f"write volume {pool_name}/{name}")
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                vol.delete(0)
            raise

    def read_volume(self, pool_name: str, name: str, limit: int) -> bytes | None:
        """The whole content of a small volume; None if it is missing or larger than `limit`."""
        vol = self._volume(pool_name, name)
        if vol is None:
            return None
        with wrapped(f"read volume {pool_name}/{name}"):
            return self._download(vol, vol.info()[1], limit)

    def _send(self, vol: libvirt.virStorageVol, source, subject: str, offset: int = 0, length: int = 0) -> None:
        stream = self.conn.newStream(0)
        try:
            with wrapped(subject):
                vol.upload(stream, offset, length, 0)
                while True:
                    chunk = source.read(_CHUNK)
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        sent = stream.send(view.tobytes())
                        view = view[sent:]
                stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise

    def _download(self, vol: libvirt.virStorageVol, size: int, limit: int) -> bytes | None:
        if size > limit:
            return None
        stream = self.conn.newStream(0)
        chunks: list[bytes] = []
        try:
            vol.download(stream, 0, size, 0)
            while True:
                data = stream.recv(_CHUNK)
                if not data or isinstance(data, int):
                    break
                chunks.append(data)
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise
        return b"".join(chunks)

    def delete_volume(self, pool_name: str, name: str) -> bool:
        if self._pool(pool_name) is None:
            return False
        vol = self._volume(pool_name, name)
        if vol is None:
            return False
        try:
            vol.delete(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return False
            raise translate(exc, f"delete volume {pool_name}/{name}") from exc
        return True


# Reads in flight at once (see LibvirtHost._reads): libvirtd serves at most five calls of
# one connection at a time unless told otherwise (max_client_requests in libvirtd.conf), so
# more threads only queue there, and each costs a tenth of a millisecond to start.
_READERS = 5
_FEW = 8  # a round of fewer calls is read one by one
_VOLUME_GONE = (libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL)  # deleted while we looked


def _values(results: dict[Any, Any]) -> dict[Any, Any]:
    """The results of `_reads`, raising the first libvirtError among them."""
    for r in results.values():
        if isinstance(r, libvirt.libvirtError):
            raise r
    return results


def _gone(result: Any, codes: tuple[int, ...], subject: str) -> bool:
    """Whether a result of `_reads` says that what was read went away while we looked (it
    was listed, then undefined or stopped: an error with one of `codes`). Any other error
    is raised as ours, naming `subject`."""
    if not isinstance(result, libvirt.libvirtError):
        return False
    if result.get_error_code() in codes:
        return True
    raise translate(result, subject) from result


def _interleave(few: list, many: list) -> Iterator:
    """The items of both lists, those of `few` spread evenly among those of `many`."""
    if not few or not many:
        yield from few or many
        return
    step = len(many) / len(few)
    rest = iter(many)
    for i, item in enumerate(few):
        yield item
        yield from itertools.islice(rest, int((i + 1) * step) - int(i * step))
    yield from rest


def _lock_xml(name: str, holder: dict[str, str], token: str | None = None) -> str:
    """The network that is lock `name`; with `token` (its UUID), the same one redefined."""
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    if token:
        ET.SubElement(root, "uuid").text = token
    ET.SubElement(root, "metadata").append(ET.Element(_LOCK_TAG, holder))
    return ET.tostring(root, encoding="unicode")


def _network_xml(net: libvirt.virNetwork) -> str:
    try:
        return net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        return net.XMLDesc(0)  # drivers that know no inactive flag (the test driver)


def _active(dom: libvirt.virDomain) -> bool:
    """Whether a domain runs; a transient one that vanished has stopped."""
    try:
        return bool(dom.isActive())
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise


def _volume(pool: str, name: str, xml: str) -> ObservedVolume:
    root = ET.fromstring(xml)

    def number(tag: str) -> int:
        el = root.find(tag)
        return int(el.text) if el is not None and el.text else 0

    fmt = root.find("target/format")
    return ObservedVolume(pool=pool, name=name, capacity=number("capacity"), allocation=number("allocation"),
                          format=fmt.get("type", "") if fmt is not None else "", path=root.findtext("target/path", ""),
                          backing=root.findtext("backingStore/path") or None)


def _note_users(users: dict[tuple[str, str], list[str]], name: str, xml: str,
                by_path: dict[str, tuple[str, str]]) -> None:
    """Record the volumes of interest that a domain not otherwise parsed has as disks."""
    files, volumes = domxml.disk_sources(xml)
    for key in volumes | {by_path[f] for f in files if f in by_path}:
        users.setdefault(key, []).append(name)


def _machine_aliases(capabilities_xml: str) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    root = ET.fromstring(capabilities_xml)
    for arch in root.findall("guest/arch"):
        for machine in arch.findall("machine") + arch.findall("domain/machine"):
            canonical = machine.get("canonical")
            if canonical and machine.text:
                out[(arch.get("name", ""), machine.text)] = canonical
    return out
