"""Reading the host into `Observed`, in a few rounds of parallel reads. Read-only."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import libvirt
import xml.etree.ElementTree as ET

from ..codec import devices
from ..codec import domain as domxml
from ..codec import imagehead, imageversions, ownership
from ..codec import network as netxml
from ..codec import seed
from ..codec import storage
from ..model.observed import is_version, volume_paths
from ..model import (ImageRecord, Observed, ObservedDomain, ObservedNetwork, ObservedPool, ObservedSeed, ObservedVolume,
                     PoolOwner)
from .connection import Connection
from .errors import translate, wrapped

_VOLUME_GONE = (libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL)  # deleted while we looked


def _ours(owner: PoolOwner | None, project: str | None) -> bool:
    return owner is not None and project is not None and owner.project == project


@dataclasses.dataclass(frozen=True)
class _Wanted:
    """What a run cares about, as `observe` was asked (see there)."""

    pools: frozenset[str]
    volumes: frozenset[tuple[str, str]]  # every volume of interest, seeds and heads included
    every_volume: bool
    live: frozenset[str] | None
    seeds: frozenset[tuple[str, str]]
    heads: frozenset[tuple[str, str]]
    networks: frozenset[str] | None
    project: str | None
    images: frozenset[tuple[str, str]] = frozenset()  # whose versions and record are read
    records: bool = False  # every pool's and network's definition is read, for the records in them

    def versioned(self, pool: str, volume: str) -> bool:
        """Whether a volume is a version or the record of an image of interest."""
        return any(p == pool and (is_version(name, volume) or volume == imageversions.record_volume(name))
                   for p, name in self.images)

    def named(self, domain: str) -> bool:
        return self.live is None or domain in self.live


@dataclasses.dataclass(frozen=True)
class _Listing:
    """The first round: what the host has, by listing, and in which state."""

    domains: list
    active: set[str]
    autostart: set[str]
    pools: list
    active_pools: set[str]
    networks: list  # those of interest
    active_networks: set[str]
    autostart_networks: set[str]
    capabilities: str | None


class Observing(Connection):

    def observe(self, pools: Iterable[str] = (), volumes: Iterable[tuple[str, str]] | None = (),
                live: Iterable[str] | None = None, seeds: Iterable[tuple[str, str]] = (),
                heads: Iterable[tuple[str, str]] = (), machines: bool = True,
                networks: Iterable[str] | None = None, project: str | None = None,
                images: Iterable[tuple[str, str]] = (), records: bool = False) -> Observed:
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
        `images` (pool, name): the images whose versions (`NAME.VERSION`, with their heads)
        and record of the current one are read too. With `records`, every pool's and every
        network's definition is read, whatever the specs name, for reconcile's records in
        them (what the project made: orphans, `--prune`), and the volumes of each active
        pool whose record is `project`'s are listed (a pool is removed only once empty).

        The reads go in rounds (the listings; each pool's path and volumes; one XML per
        domain, volume and network), the calls of a round several at a time (see `_reads`);
        parsing waits until a round is in.
        """
        seeds, heads = frozenset(seeds), frozenset(heads)
        want = _Wanted(pools=frozenset(pools), volumes=frozenset(volumes or ()) | seeds | heads,
                       every_volume=volumes is None, live=None if live is None else frozenset(live), seeds=seeds,
                       heads=heads, networks=None if networks is None else frozenset(networks), project=project,
                       images=frozenset(images), records=records)
        listed = self._list(want, machines)
        observed_pools, vol_objects = self._read_pools(listed, want)
        xml_of = self._read_xml(listed, vol_objects, want)
        observed_volumes: dict[tuple[str, str], ObservedVolume] = {}
        for key in vol_objects:
            xml = xml_of[("volume", key)]
            if not _gone(xml, _VOLUME_GONE, f"read volume {key[0]}/{key[1]}"):
                observed_volumes[key] = storage.observed_volume(key[0], key[1], xml)
        observed_seeds, records = self._read_content(vol_objects, observed_volumes, want)
        domains, users, interfaces = _domains(listed, xml_of, observed_volumes, want)
        networks = _networks(listed, xml_of)
        return Observed(uri=self.uri, domains=domains, pools=observed_pools, volumes=observed_volumes,
                        networks=networks, seeds=observed_seeds,
                        attached={k: tuple(sorted(v)) for k, v in users.items() if k in observed_volumes},
                        network_users=_network_users(interfaces, networks),
                        machine_aliases=domxml.machine_aliases(listed.capabilities) if listed.capabilities else {},
                        images=records)

    def _list(self, want: _Wanted, machines: bool) -> _Listing:
        """Round one: the listings."""
        conn = self.conn
        listings: dict[str, tuple] = {
            "domains": (conn.listAllDomains, 0),
            "active": (conn.listAllDomains, libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE),
            "autostart": (conn.listAllDomains, libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART),
            "pools": (conn.listAllStoragePools, 0),
            "active pools": (conn.listAllStoragePools, libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE),
        }
        if want.records or want.networks is None or want.networks:
            listings["networks"] = (conn.listAllNetworks, 0)
            listings["active networks"] = (conn.listAllNetworks, libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE)
            listings["autostart networks"] = (conn.listAllNetworks, libvirt.VIR_CONNECT_LIST_NETWORKS_AUTOSTART)
        if machines:
            listings["capabilities"] = (conn.getCapabilities,)
        with wrapped("read the host"):
            listed = _values(self._reads(listings))
        nets = listed.get("networks", [])
        wanted_nets = want.networks
        # A network of interest that is not there yet may be created: then the others'
        # addresses and bridges are read too, so that a clash is refused at plan time.
        if want.records or (wanted_nets and not wanted_nets <= {n.name() for n in nets}):
            wanted_nets = None
        names = lambda key: {x.name() for x in listed.get(key, ())}  # noqa: E731
        return _Listing(domains=listed["domains"], active=names("active"), autostart=names("autostart"),
                        pools=listed["pools"], active_pools=names("active pools"),
                        networks=[n for n in nets if wanted_nets is None or n.name() in wanted_nets],
                        active_networks=names("active networks"), autostart_networks=names("autostart networks"),
                        capabilities=listed.get("capabilities"))

    def _read_pools(self, listed: _Listing, want: _Wanted) -> tuple[dict[str, ObservedPool], dict]:
        """Round two: the path and the volumes of each pool of interest."""
        every_pool = {p.name() for p in listed.pools}
        wanted = every_pool if want.every_volume else set(want.pools) | {p for p, _ in want.volumes | want.images}
        # a pool to create: its path is checked against all the others' (their volumes are not needed)
        paths = every_pool if want.records or not wanted <= every_pool else wanted
        reads: dict[tuple[str, str], tuple] = {}
        for pool in listed.pools:
            if pool.name() in paths:  # only these need their path: one read fewer per other pool
                reads[("xml", pool.name())] = (pool.XMLDesc, 0)
            if pool.name() in wanted and pool.name() in listed.active_pools:
                reads[("volumes", pool.name())] = (pool.listAllVolumes, 0)
        results = self._reads(reads)
        defined: dict[str, tuple[str, PoolOwner | None]] = {}  # name -> its path and reconcile's record
        for pool in listed.pools:
            xml = results.get(("xml", pool.name()), "")
            if not _gone(xml, (libvirt.VIR_ERR_NO_STORAGE_POOL,), f"read pool {pool.name()}"):
                defined[pool.name()] = (storage.pool_path(xml), storage.pool_owner(xml))
        # The project's own pools are removed only once empty: their volumes are listed too.
        mine = {pool.name(): (pool.listAllVolumes, 0) for pool in listed.pools
                if ("volumes", pool.name()) not in reads and pool.name() in listed.active_pools
                and _ours(defined.get(pool.name(), ("", None))[1], want.project)}
        if mine:
            results.update({("volumes", name): vols for name, vols in self._reads(mine).items()})
        vol_objects: dict[tuple[str, str], libvirt.virStorageVol] = {}
        names: dict[str, tuple[str, ...]] = {}
        for (what, name), vols in results.items():
            # a pool removed or stopped while we looked has no volumes to report
            if what == "volumes" and not _gone(vols, (libvirt.VIR_ERR_NO_STORAGE_POOL,
                                                      libvirt.VIR_ERR_OPERATION_INVALID), f"list volumes of pool {name}"):
                names[name] = tuple(sorted(v.name() for v in vols))
                if name in wanted:
                    vol_objects.update(((name, v.name()), v) for v in vols
                                       if want.every_volume or (name, v.name()) in want.volumes
                                       or want.versioned(name, v.name()))
        observed = {name: ObservedPool(name, name in listed.active_pools, path, owner, names.get(name))
                    for name, (path, owner) in defined.items()}
        return observed, vol_objects

    def _read_xml(self, listed: _Listing, vol_objects: dict, want: _Wanted) -> dict:
        """Round three: one XML per domain, running domain of interest, volume of interest
        and network. libvirtd answers the reads of one pool's volumes one at a time, so those
        are spread among the others, which it answers in parallel."""
        inactive = libvirt.VIR_DOMAIN_XML_INACTIVE
        others: list[tuple[tuple, tuple]] = [(("domain", d.name()), (d.XMLDesc, inactive)) for d in listed.domains]
        others += [(("live", d.name()), (d.XMLDesc, 0)) for d in listed.domains
                   if d.name() in listed.active and want.named(d.name())]
        others += [(("network", n.name()), (_network_xml, n)) for n in listed.networks]
        vol_calls = [(("volume", key), (v.XMLDesc, 0)) for key, v in vol_objects.items()]
        return self._reads(dict(_interleave(vol_calls, others)))

    def _read_content(self, vol_objects: dict, volumes: dict[tuple[str, str], ObservedVolume],
                      want: _Wanted) -> tuple[dict[tuple[str, str], ObservedSeed], dict[tuple[str, str], ImageRecord]]:
        """Round four, through streams: the files of seeds (a few dozen KiB each), the
        heads of images and their versions (a few KiB) and the images' records. Updates
        `volumes` with the heads read."""
        seeds: dict[tuple[str, str], ObservedSeed] = {}
        records: dict[tuple[str, str], ImageRecord] = {}
        present = set(volumes)
        record_of = {(pool, imageversions.record_volume(name)): (pool, name) for pool, name in want.images}
        heads = want.heads | {key for key in present if key not in record_of and want.versioned(*key)}
        streams = {("seed", key): (self._download, vol_objects[key], volumes[key].capacity, seed.MAX_SEED_BYTES)
                   for key in sorted(want.seeds & present)}
        streams.update({("head", key): (self._download, vol_objects[key], imagehead.HEAD_BYTES, imagehead.HEAD_BYTES)
                        for key in sorted(heads & present)})
        streams.update({("record", key): (self._download, vol_objects[key], volumes[key].capacity,
                                          imageversions.MAX_RECORD_BYTES)
                        for key in sorted(set(record_of) & present)})
        # one by one, on this thread: streams interleaved on one connection are where the
        # libvirt client is least proven, and there are a few of them
        for (what, key), data in self._one_by_one(streams).items():
            if _gone(data, _VOLUME_GONE, f"read volume {key[0]}/{key[1]}"):
                volumes.pop(key, None)
                seeds.pop(key, None)
            elif key not in volumes:
                continue
            elif what == "seed":
                files = seed.read_iso(data) if data is not None else None
                seeds[key] = ObservedSeed(files, seed.instance_id_of(files.get("meta-data", b"")) if files else None)
            elif what == "record":
                record = imageversions.decode(data)
                if record is not None:
                    records[record_of[key]] = record
            else:
                volumes[key] = dataclasses.replace(volumes[key], head=imagehead.parse(data))
        return seeds, records


def _domains(listed: _Listing, xml_of: dict, volumes: dict[tuple[str, str], ObservedVolume],
             want: _Wanted) -> tuple[dict[str, ObservedDomain], dict[tuple[str, str], list[str]], dict]:
    """The domains of interest, which domains (of any project, or none) have each volume
    as a disk (one attached elsewhere is never attached again, nor deleted), and the networks
    and bridges each domain's interfaces are on (a network in use is never removed).

    With a project, the domains observed are those the specs name and those the project
    manages; the XML of the others is only scanned for its disks."""
    by_path = volume_paths(volumes)
    observed: dict[str, ObservedDomain] = {}
    users: dict[tuple[str, str], list[str]] = {}
    interfaces: dict[str, tuple[set[str], set[str]]] = {}
    scoped = want.project is not None and want.live is not None
    for dom in listed.domains:
        name = dom.name()
        xml = xml_of[("domain", name)]
        if _gone(xml, (libvirt.VIR_ERR_NO_DOMAIN,), f"read domain {name}"):
            continue
        interfaces[name] = domxml.interface_sources(xml)
        named = want.named(name)
        if scoped and not named and ownership.NAMESPACE not in xml:
            _note_users(users, name, xml, by_path)
            continue  # neither named nor managed by anyone
        root = ET.fromstring(xml)
        owner = ownership.read_ownership(root)
        if scoped and not named and (owner is None or owner.project != want.project):
            _note_users(users, name, xml, by_path)
            continue  # another project's
        essence = domxml.essence_of_element(root, by_path)
        for disk in essence["disks"].values():
            if disk["pool"] is not None:
                users.setdefault((disk["pool"], disk["volume"]), []).append(name)
        essence["autostart"] = name in listed.autostart
        live_essence = None
        running = xml_of.get(("live", name))
        stopped = (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID)
        if running is not None and not _gone(running, stopped, f"read domain {name}"):
            # The running domain's own XML: a deferred change shows as config != live.
            live_essence = domxml.essence_of_element(ET.fromstring(running), by_path)
            live_essence["autostart"] = essence["autostart"]
        observed[name] = ObservedDomain(name=name, uuid=dom.UUIDString(), running=name in listed.active,
                                        essence=essence, ownership=owner, xml=xml, live_essence=live_essence,
                                        unmodeled=devices.unmodeled(root))
    return observed, users, interfaces


def _network_users(interfaces: dict[str, tuple[set[str], set[str]]],
                   networks: dict[str, ObservedNetwork]) -> dict[str, tuple[str, ...]]:
    """The domains on each network: by its name, or on its bridge (an interface of type bridge)."""
    bridge_of = {n.essence.get("bridge"): n.name for n in networks.values() if n.essence.get("bridge")}
    out: dict[str, set[str]] = {}
    for domain, (nets, bridges) in interfaces.items():
        for net in nets | {bridge_of[b] for b in bridges if b in bridge_of}:
            out.setdefault(net, set()).add(domain)
    return {net: tuple(sorted(names)) for net, names in out.items()}


def _networks(listed: _Listing, xml_of: dict) -> dict[str, ObservedNetwork]:
    out: dict[str, ObservedNetwork] = {}
    for net in listed.networks:
        name = net.name()
        xml = xml_of[("network", name)]
        if not _gone(xml, (libvirt.VIR_ERR_NO_NETWORK,), f"read network {name}"):
            project, spec_file = netxml.owner_of(xml)
            out[name] = ObservedNetwork(name, name in listed.active_networks, name in listed.autostart_networks,
                                        netxml.essence_of(xml), project, netxml.hosts_of(xml), spec_file)
    return out


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


def _network_xml(net: libvirt.virNetwork) -> str:
    try:
        return net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        return net.XMLDesc(0)  # drivers that know no inactive flag (the test driver)


def _note_users(users: dict[tuple[str, str], list[str]], name: str, xml: str,
                by_path: dict[str, tuple[str, str]]) -> None:
    """Record the volumes of interest that a domain not otherwise parsed has as disks."""
    files, volumes = domxml.disk_sources(xml)
    for key in volumes | {by_path[f] for f in files if f in by_path}:
        users.setdefault(key, []).append(name)
