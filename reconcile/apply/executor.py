"""Run a `Plan` against a host: dependency order, bounded parallelism, partial results.

An action runs once everything it depends on has succeeded; if a dependency failed or was
skipped, it is skipped with that cause, while independent branches go on. Each primitive
re-checks its precondition right before acting, so an action whose work is already done
ends as UNCHANGED instead of failing. The result always covers every action.

What libvirt cannot do at the same time is kept apart by keyed locks (`locks_of`), taken by
the scheduler before an action is handed to a worker, so no worker ever blocks on one:
- a storage pool is shared by the actions that write a volume of it (create, grow, delete,
  image upload, seed) and held alone by an action on the pool itself. Creating, growing
  and deleting volumes of one pool from many threads works (tests/test_concurrency.py
  checks it on the real daemon), but a pool-wide operation (refresh, build, start,
  destroy) fails with "pool has asynchronous jobs running" while any volume of it is
  being written;
- a domain or a volume is held alone by whatever acts on it.

When the connection to the host is lost, nothing new starts: the actions not yet started
are skipped with that cause, since each would fail the same way; a re-run converges. Any
other failure ends only its own action and what depends on it.

An action whose failure the host calls temporary (a system call answered EAGAIN) is tried
again after a short pause (`RETRY_PAUSES`), three times in all; its result says so. Re-running
an action is safe for the same reason a re-run of the whole apply is: it re-checks first.

The executor knows nothing of YAML, output formats or libvirt: it drives any object with
the `Host` methods below.
"""

from __future__ import annotations

import concurrent.futures as cf
import heapq
import os
import time
from collections.abc import Callable
from typing import Protocol

from ..codec import seed
from . import sources
from ..errors import ConnectionLost, HostError, ReconcileError
from ..codec.imagehead import ImageHead
from ..model import DEFAULT_STOP_TIMEOUT, Action, ActionKind, ActionResult, ApplyResult, Plan, ResourceKind, Status

# Most of an action's time is spent waiting for libvirtd and QEMU, not on our CPU, so more
# workers than cores pay off: on a 2-core host 20 domains start about 3x faster from 8
# threads than one after another. More than 8 mostly adds contention inside libvirtd.
DEFAULT_PARALLEL = min(8, 4 * (os.cpu_count() or 1))

# Seconds to wait before trying again an action that failed with a temporary host error:
# before the second try, then before the third and last.
RETRY_PAUSES = (0.5, 2.0)


class Host(Protocol):
    def define_domain(self, name: str, xml: str, autostart: bool) -> None: ...
    def domain_exists(self, name: str) -> bool: ...
    def start_domain(self, name: str) -> bool: ...
    def record_state(self, name: str, state: str) -> None: ...
    def stop_domain(self, name: str, timeout: float, force: bool = False) -> str: ...
    def undefine_domain(self, name: str) -> bool: ...
    def apply_live(self, name: str, ops: list[tuple]) -> list[str]: ...
    def ensure_pool(self, name: str, path: str) -> bool: ...
    def ensure_network(self, name: str, xml: str) -> bool: ...
    def read_head(self, pool_name: str, name: str) -> ImageHead | None: ...
    def create_volume(self, pool_name: str, name: str, capacity: int | None, fmt: str,
                      backing: dict | None = None) -> bool: ...
    def grow_volume(self, pool_name: str, name: str, capacity: int, domain: str | None = None,
                    target: str | None = None) -> bool: ...
    def delete_volume(self, pool_name: str, name: str) -> bool: ...
    def upload_volume(self, pool_name: str, name: str, source, fmt: str) -> bool: ...
    def write_volume(self, pool_name: str, name: str, data: bytes) -> None: ...
    def read_volume(self, pool_name: str, name: str, limit: int) -> bytes | None: ...


def _write_seed(host: Host, p: dict) -> tuple[Status, str]:
    """Build and upload the seed ISO, unless the volume already holds exactly these files."""
    current = host.read_volume(p["pool"], p["name"], seed.MAX_SEED_BYTES)
    if current is not None and seed.read_iso(current) == dict(p["files"]):
        return Status.UNCHANGED, "already holds these files"
    data = seed.build_iso(p["files"])
    host.write_volume(p["pool"], p["name"], data)
    return Status.APPLIED, f"{len(data) // 1024} KiB"


SHARED, EXCLUSIVE = False, True


def locks_of(action: Action) -> dict[str, bool]:
    """The keys an action holds while it runs: key -> EXCLUSIVE, or SHARED with its kind."""
    if action.resource is ResourceKind.POOL:
        return {f"pool:{action.name}": EXCLUSIVE}
    p = action.payload
    if isinstance(p, dict) and "pool" in p and "name" in p:  # writes a volume: a new one, an upload, a seed
        return {f"pool:{p['pool']}": SHARED, f"volume:{p['pool']}/{p['name']}": EXCLUSIVE}
    return {f"{action.resource.value}:{action.name}": EXCLUSIVE}


class _Locks:
    """Keyed reader/writer bookkeeping, used only by the scheduling thread."""

    def __init__(self) -> None:
        self.held: dict[str, list[bool]] = {}

    def free(self, wanted: dict[str, bool]) -> bool:
        for key, exclusive in wanted.items():
            holders = self.held.get(key)
            if holders and (exclusive or any(holders)):
                return False
        return True

    def take(self, wanted: dict[str, bool]) -> None:
        for key, exclusive in wanted.items():
            self.held.setdefault(key, []).append(exclusive)

    def release(self, wanted: dict[str, bool]) -> None:
        for key, exclusive in wanted.items():
            self.held[key].remove(exclusive)
            if not self.held[key]:
                del self.held[key]


def describe_stop(how: str, timeout: float, force: bool) -> str:
    """How a stop ended, in words; starts with the outcome ("graceful"/"forced")."""
    if how == "graceful":
        return "graceful: shut down after the ACPI power-button press"
    if how == "forced":
        if force:
            return "forced: powered off at once (--force)"
        if timeout <= 0:
            return "forced: powered off at once (stop_timeout is 0)"
        return f"forced: still running {timeout:g}s after the ACPI power-button press, so powered off"
    return how


def run_action(host: Host, action: Action, force: bool = False) -> tuple[Status, str, str]:
    """Do one action: (status, message, outcome); UNCHANGED when the re-check finds it done.

    `outcome` is a stable word for machines: for a stop "graceful", "forced" or "already
    stopped"; empty for other actions.
    """
    if action.resource is ResourceKind.DOMAIN and action.kind is ActionKind.STOP:
        timeout = action.payload.get("stop_timeout")
        timeout = DEFAULT_STOP_TIMEOUT if timeout is None else timeout
        how = host.stop_domain(action.name, timeout, force)
        host.record_state(action.name, "stopped")
        if how == "already stopped":
            return Status.UNCHANGED, how, how
        return Status.APPLIED, describe_stop(how, timeout, force), how
    status, message = _run(host, action)
    return status, message, ""


def _run(host: Host, action: Action) -> tuple[Status, str]:
    p = action.payload
    kind, res = action.kind, action.resource
    if res is ResourceKind.POOL:
        changed = host.ensure_pool(p.name, p.path)
        return (Status.APPLIED, "") if changed else (Status.UNCHANGED, "already exists and is active")
    if res is ResourceKind.NETWORK:
        changed = host.ensure_network(action.name, p["xml"])
        return (Status.APPLIED, "") if changed else (Status.UNCHANGED, "already exists, active and autostarted")
    if res is ResourceKind.IMAGE:
        head = host.read_head(p["pool"], p["name"])
        if head is not None and not head.unfinished:
            return Status.UNCHANGED, "already imported"
        if head is not None:  # reconcile's own marker: an import of ours that never finished
            host.delete_volume(p["pool"], p["name"])
        with sources.ImageSource(p["source"], p.get("sha256")) as src:
            changed = host.upload_volume(p["pool"], p["name"], src, p["format"])
            size = src.done
        if not changed:
            return Status.UNCHANGED, "already imported"
        redone = "; the unfinished earlier import was removed first" if head is not None else ""
        return Status.APPLIED, f"{size} bytes" + (", sha256 verified" if p.get("sha256") else "") + redone
    if res is ResourceKind.VOLUME:
        op = p.get("op", "create")
        if op == "seed":
            return _write_seed(host, p)
        if kind is ActionKind.CREATE:
            changed = host.create_volume(p["pool"], p["name"], p["capacity"], p["format"], p.get("backing"))
            return (Status.APPLIED, "") if changed else (Status.UNCHANGED, "already exists")
        if kind is ActionKind.UPDATE:
            changed = host.grow_volume(p["pool"], p["name"], p["capacity"], p.get("domain"), p.get("target"))
            return (Status.APPLIED, "grown") if changed else (Status.UNCHANGED, "already large enough")
        if kind is ActionKind.DESTROY:
            changed = host.delete_volume(p["pool"], p["name"])
            return (Status.APPLIED, "") if changed else (Status.UNCHANGED, "already gone")
    if res is ResourceKind.DOMAIN:
        if kind is ActionKind.CREATE:
            if host.domain_exists(action.name):
                return Status.UNCHANGED, "already defined"
            host.define_domain(action.name, p["xml"], p["autostart"])
            return Status.APPLIED, ""
        if kind is ActionKind.UPDATE:
            host.define_domain(action.name, p["xml"], p["autostart"])
            done = host.apply_live(action.name, p["live"]) if p.get("live") else []
            return Status.APPLIED, "; ".join(done)
        if kind is ActionKind.START:
            changed = host.start_domain(action.name)
            host.record_state(action.name, "running")
            return (Status.APPLIED, "") if changed else (Status.UNCHANGED, "already running")
        if kind is ActionKind.DESTROY:
            changed = host.undefine_domain(action.name)
            return (Status.APPLIED, "") if changed else (Status.UNCHANGED, "already gone")
    raise ValueError(f"no way to {kind.value} a {res.value}")


def execute(plan: Plan, host: Host, parallel: int = DEFAULT_PARALLEL, force: bool = False,
            on_result: Callable[[ActionResult], None] | None = None,
            on_start: Callable[[Action, float], None] | None = None) -> ApplyResult:
    """Run every action of `plan`.

    `on_start(action, time)` and `on_result(result)` are called from the scheduling thread
    as actions start and end (for progress); they must not block for long.
    """
    started = time.monotonic()
    by_id = {a.id: a for a in plan.actions}
    order = {a.id: i for i, a in enumerate(plan.actions)}
    results: dict[str, ActionResult] = {}
    waiting_on: dict[str, int] = {}  # action id -> dependencies not yet ended
    dependents: dict[str, list[str]] = {aid: [] for aid in by_id}
    for a in plan.actions:
        deps = {d for d in a.depends_on if d in by_id}
        waiting_on[a.id] = len(deps)
        for d in deps:
            dependents[d].append(a.id)
    ready = [(order[a.id], a.id) for a in plan.actions if waiting_on[a.id] == 0]  # a heap, in plan order
    locks = _Locks()
    lost: list[str] = []  # why nothing new starts: the connection was lost

    def finish(result: ActionResult) -> None:
        results[result.action.id] = result
        if on_result:
            on_result(result)
        failed = result.status in (Status.FAILED, Status.SKIPPED)
        for dep in dependents[result.action.id]:
            if dep in results:
                continue
            if failed:
                now = time.time()
                finish(ActionResult(by_id[dep], Status.SKIPPED,
                                    f"because {result.action.id} {result.status.value}", now, now))
                continue
            waiting_on[dep] -= 1
            if waiting_on[dep] == 0:
                heapq.heappush(ready, (order[dep], dep))

    def attempt(action: Action) -> ActionResult:
        t0 = time.time()
        temporary: list[str] = []  # the temporary failures so far
        while True:
            try:
                status, message, outcome = run_action(host, action, force)
            except ReconcileError as exc:
                if isinstance(exc, HostError) and exc.transient and len(temporary) < len(RETRY_PAUSES):
                    time.sleep(RETRY_PAUSES[len(temporary)])
                    temporary.append(str(exc))
                    continue
                note = f" (tried {len(temporary) + 1} times; the host called it temporary)" if temporary else ""
                if isinstance(exc, ConnectionLost):
                    # libvirtd may have done it and lost only the answer (a start whose domain
                    # runs): the outcome is not known, and the message must not claim one.
                    note += "; the connection broke while this ran, so whether it took effect is unknown"
                return ActionResult(action, Status.FAILED, f"{exc}{note}", t0, time.time(),
                                    error=getattr(exc, "kind", "error"), attempts=len(temporary) + 1,
                                    connection_lost=isinstance(exc, ConnectionLost))
            break
        if temporary:
            retried = f"after {len(temporary)} temporary failure{'s' if len(temporary) > 1 else ''}: {temporary[-1]}"
            message = f"{message}; {retried}" if message else retried
        return ActionResult(action, status, message, t0, time.time(), outcome=outcome, attempts=len(temporary) + 1)

    workers = max(1, parallel)
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile") as pool:
        running: dict[cf.Future[ActionResult], Action] = {}
        while ready or running:
            deferred = []  # ready, but what they act on is busy
            while ready and len(running) < workers:
                _, aid = heapq.heappop(ready)
                action = by_id[aid]
                if aid in results:  # skipped meanwhile
                    continue
                if lost:
                    now = time.time()
                    finish(ActionResult(action, Status.SKIPPED, f"not attempted: {lost[0]}", now, now))
                    continue
                wanted = locks_of(action)
                if locks.free(wanted):
                    locks.take(wanted)
                    if on_start:
                        on_start(action, time.time())
                    running[pool.submit(attempt, action)] = action
                else:
                    deferred.append((order[aid], aid))
            for item in deferred:
                heapq.heappush(ready, item)
            if not running:
                break
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: order[running[f].id]):
                action = running.pop(future)
                locks.release(locks_of(action))
                result = future.result()
                if result.connection_lost and not lost:
                    lost.append("the connection to the host was lost")
                finish(result)
    missing = [a.id for a in plan.actions if a.id not in results]
    if missing:
        raise RuntimeError(f"plan has a dependency cycle among {sorted(missing)}")

    ordered = tuple(results[a.id] for a in plan.actions)
    return ApplyResult(plan=plan, results=ordered, wall_time=time.monotonic() - started,
                       connection_lost=bool(lost))
