"""What runs at the same time, and what must not.

Found on the real daemon (and kept true by these tests): volumes of one dir pool can be
created and deleted from many threads at once; what fails is a pool-wide operation while a
volume of it is being written ("pool has asynchronous jobs running"). So the executor lets
volume actions of one pool overlap and holds a pool alone for an action on the pool itself.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import threading
import time

import pytest

from reconcile.apply.executor import execute
from reconcile.host import LibvirtHost
from reconcile.model.steps import CreateVolume, EnsurePool, StartDomain, StopDomain
from reconcile.model import Action, ActionKind, Plan, PoolSpec, Origin, ResourceKind, Status

from .conftest import DOMAIN_TYPE, SYSTEM_URI


def overlapping(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


@pytest.mark.libvirtd
def test_twenty_creates_overlap_in_the_json_results(lab):
    names = [lab.dom(f"p{i:02d}") for i in range(20)]
    lab.spec("many.yaml", "domains:\n" + "".join(
        f"  - {{name: {n}, type: {DOMAIN_TYPE}, memory: 64MiB, state: stopped,"
        f" disks: [{{pool: {lab.pool}, size: 16MiB}}]}}\n" for n in names))
    out = lab.cli("apply", "-o", "json", check=0)
    doc = json.loads(out.stdout)
    results = doc["results"]
    assert doc["recap"] == {"applied": 41, "unchanged": 0, "failed": 0, "skipped": 0}
    assert overlapping([(r["started"], r["finished"]) for r in results]) >= 2
    volumes = [(r["started"], r["finished"]) for r in results if r["id"].startswith("volume:")]
    assert overlapping(volumes) >= 2, "volumes of one pool were created one at a time"
    assert lab.volume_names() == {f"{n}-vda.qcow2" for n in names}


@pytest.mark.libvirtd
def test_volumes_of_one_pool_from_many_threads(lab):
    lab.cli("apply", check=0)  # creates the lab's pool
    host = LibvirtHost(SYSTEM_URI)
    names = [f"{lab.name}-t{i}.qcow2" for i in range(16)]
    try:
        with cf.ThreadPoolExecutor(8) as pool:
            assert all(pool.map(lambda n: host.create_volume(lab.pool, n, 8 << 20, "qcow2"), names))
            assert lab.volume_names() == set(names)
            assert all(pool.map(lambda n: host.delete_volume(lab.pool, n), names))
        assert lab.volume_names() == set()
    finally:
        host.close()


class Recording:
    """A host that takes a while per call and records which calls ran at the same time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.open: dict[str, int] = {}
        self.clashes: list[str] = []
        self.calls: list[tuple[str, float, float]] = []

    def _call(self, key: str, exclusive_with: tuple[str, ...]) -> bool:
        with self.lock:
            if any(self.open.get(k) for k in exclusive_with):
                self.clashes.append(key)
            self.open[key] = self.open.get(key, 0) + 1
        t0 = time.monotonic()
        time.sleep(0.05)
        with self.lock:
            self.open[key] -= 1
            self.calls.append((key, t0, time.monotonic()))
        return True

    def ensure_pool(self, name, path, owner=None):
        return self._call(f"pool {name}", (f"pool {name}", f"volume {name}"))

    def create_volume(self, pool, name, capacity, fmt, backing=None):
        return self._call(f"volume {pool}", (f"pool {pool}",))

    def start_domain(self, name):
        return self._call(f"domain {name}", (f"domain {name}",))

    def stop_domain(self, name, timeout, force=False):
        self._call(f"domain {name}", (f"domain {name}",))
        return "forced"

    def record_state(self, name, state):
        pass


def test_pool_actions_run_alone_and_volume_actions_together():
    """Even with no dependency between them, a pool is never acted on while one of its
    volumes is, nor a domain by two actions at once; volumes of one pool do overlap."""
    pool = PoolSpec("p", "/nowhere", Origin("x.yaml"))
    actions = [Action(ActionKind.CREATE, ResourceKind.VOLUME, f"p/v{i}", "",
                      payload=CreateVolume("p", f"v{i}", 1, "raw")) for i in range(6)]
    actions.insert(3, Action(ActionKind.START, ResourceKind.POOL, "p", "", payload=EnsurePool(pool.name, pool.path)))
    actions += [Action(ActionKind.START, ResourceKind.DOMAIN, "d", "", payload=StartDomain()),
                Action(ActionKind.STOP, ResourceKind.DOMAIN, "d", "", payload=StopDomain(0))]
    host = Recording()
    result = execute(Plan("x", "test:///default", tuple(actions)), host, parallel=8)
    assert all(r.status is Status.APPLIED for r in result.results), result.results
    assert host.clashes == []
    assert overlapping([(s, e) for k, s, e in host.calls if k == "volume p"]) >= 2
