"""What a plan saw of the host, as fingerprints: one per resource it read, so that applying a
reviewed plan later can tell whether the host moved since, and say how.

A fingerprint is a hash of what was observed of a resource (a domain's essence, state and
ownership record; a volume's size, format and backing; a pool's path; a network's essence;
a seed's files, hashed) and, for a domain, its state in words. It holds no secret: a seed's
files enter it only through their hashes. Pure: no libvirt, no files, no clock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from ..model import Desired, Observed


@dataclasses.dataclass(frozen=True)
class Seen:
    """One resource as a plan read it: whether it existed, a digest of what it was, and
    for a domain its state."""

    exists: bool
    digest: str = ""
    state: str | None = None


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprints(desired: Desired, observed: Observed) -> dict[str, Seen]:
    """Every resource the plan of `desired` read on this host, by `KIND:NAME`."""
    out: dict[str, Seen] = {}
    domains = {d.name for d in desired.domains} | {
        name for name, dom in observed.domains.items()
        if dom.ownership is not None and dom.ownership.project == desired.project}
    for name in sorted(domains):
        dom = observed.domains.get(name)
        if dom is None:
            out[f"domain:{name}"] = Seen(False)
            continue
        record = dataclasses.asdict(dom.ownership) if dom.ownership else None
        if record is not None:
            record["applied"] = dom.ownership.applied
        out[f"domain:{name}"] = Seen(True, _digest([dom.uuid, dom.essence, dom.live_essence, record]),
                                     "running" if dom.running else "stopped")
    for name in sorted(desired.pools_of_interest()):
        pool = observed.pools.get(name)
        out[f"pool:{name}"] = Seen(pool is not None, _digest([pool.active, pool.path]) if pool else "")
    for name in sorted(desired.networks_of_interest()):
        net = observed.networks.get(name)
        out[f"network:{name}"] = Seen(net is not None, _digest([net.active, net.autostart, net.essence, net.owner_project,
                                                                [dataclasses.asdict(h) for h in net.hosts]])
                                      if net else "")
    spec_seeds = {(d.seed.pool, d.seed.volume): d.seed for d in desired.domains if d.seed is not None}
    for pool, name in sorted(desired.volumes_of_interest()):
        vol = observed.volumes.get((pool, name))
        seed = observed.seeds.get((pool, name))
        spec_seed = spec_seeds.get((pool, name))
        what = None
        if vol is not None:
            what = [vol.capacity, vol.format, vol.path, vol.backing,
                    dataclasses.asdict(vol.head) if vol.head else None,
                    (spec_seed.digests_of(seed.files) if spec_seed is not None and seed.files is not None
                     else seed.file_digests()) if seed is not None else None,
                    sorted(observed.attached.get((pool, name), ()))]
        out[f"volume:{pool}/{name}"] = Seen(vol is not None, _digest(what) if what else "")
    for (pool, name), record in sorted(observed.images.items()):
        out[f"image:{pool}/{name}"] = Seen(True, _digest([record.current, dataclasses.asdict(record.stamp)]))
    return out


def changes_since(before: dict[str, Seen], now: dict[str, Seen]) -> list[str]:
    """How the host moved from what a plan saw, one line per resource, in words."""
    out = []
    for key in sorted(set(before) | set(now)):
        was, is_ = before.get(key), now.get(key)
        kind, _, name = key.partition(":")
        if was is None:
            if is_ is not None and is_.exists:
                out.append(f"{kind} {name}: appeared since the plan was made")
            continue
        if is_ is None:
            if was.exists:
                out.append(f"{kind} {name}: no longer read by the plan (the specs or the host changed)")
            continue
        if was == is_:
            continue
        if was.exists and not is_.exists:
            out.append(f"{kind} {name}: deleted since the plan was made")
        elif is_.exists and not was.exists:
            out.append(f"{kind} {name}: created since the plan was made")
        elif was.state != is_.state:
            out.append(f"{kind} {name}: state {was.state} -> {is_.state} since the plan was made")
        else:
            out.append(f"{kind} {name}: changed since the plan was made")
    return out
