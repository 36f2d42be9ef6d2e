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
the `Host` methods of `runners`, where each kind of step has its runner.
"""

from __future__ import annotations

import concurrent.futures as cf
import heapq
import os
import time
from collections.abc import Callable, Mapping

from ..errors import ConnectionLost, HostError, ReconcileError
from ..model import Action, ActionResult, ApplyResult, Plan, ResourceKind, Status
from ..model.steps import VolumeStep
from .runners import Host, run_action

# Most of an action's time is spent waiting for libvirtd and QEMU, not on our CPU, so more
# workers than cores pay off: on a 2-core host 20 domains start about 3x faster from 8
# threads than one after another. More than 8 mostly adds contention inside libvirtd.
DEFAULT_PARALLEL = min(8, 4 * (os.cpu_count() or 1))

# Seconds to wait before trying again an action that failed with a temporary host error:
# before the second try, then before the third and last.
RETRY_PAUSES = (0.5, 2.0)


SHARED, EXCLUSIVE = False, True


def locks_of(action: Action) -> dict[str, bool]:
    """The keys an action holds while it runs: key -> EXCLUSIVE, or SHARED with its kind."""
    if action.resource is ResourceKind.POOL:
        return {f"pool:{action.name}": EXCLUSIVE}
    p = action.payload
    if isinstance(p, VolumeStep):  # writes a volume: a new one, an upload, a seed
        return {f"pool:{p.pool}": SHARED, f"volume:{p.pool}/{p.name}": EXCLUSIVE}
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


def execute(plan: Plan, host: Host, parallel: int = DEFAULT_PARALLEL, force: bool = False,
            on_result: Callable[[ActionResult], None] | None = None,
            on_start: Callable[[Action, float], None] | None = None,
            settled: Mapping[str, ActionResult] | None = None) -> ApplyResult:
    """Run every action of `plan`.

    `on_start(action, time)` and `on_result(result)` are called from the scheduling thread
    as actions start and end (for progress); they must not block for long. `settled`: the
    results of actions an earlier run ended (a round before, on many hosts), which actions
    of `plan` may depend on: what depends on one that failed or was skipped is skipped, and
    after a lost connection nothing is attempted, as if they had ended in this run.
    """
    started = time.monotonic()
    run = _Run(plan, on_result)
    run.settle(settled or {})
    workers = max(1, parallel)
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile") as pool:
        running: dict[cf.Future[ActionResult], Action] = {}
        while run.ready or running:
            for action in run.startable(workers - len(running)):
                if on_start:
                    on_start(action, time.time())
                running[pool.submit(attempt, host, action, force)] = action
            if not running:
                break
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: run.order[running[f].id]):
                run.ended(running.pop(future), future.result())
    missing = [a.id for a in plan.actions if a.id not in run.results]
    if missing:
        raise RuntimeError(f"plan has a dependency cycle among {sorted(missing)}")
    ordered = tuple(run.results[a.id] for a in plan.actions)
    return ApplyResult(plan=plan, results=ordered, wall_time=time.monotonic() - started,
                       connection_lost=bool(run.lost))


class _Run:
    """The scheduling state of one execution: what is ready, what waits on what, which keys
    are held. Used by the scheduling thread only."""

    def __init__(self, plan: Plan, on_result: Callable[[ActionResult], None] | None):
        self.by_id = {a.id: a for a in plan.actions}
        self.order = {a.id: i for i, a in enumerate(plan.actions)}
        self.results: dict[str, ActionResult] = {}
        self.waiting_on: dict[str, int] = {}  # action id -> dependencies not yet ended
        self.dependents: dict[str, list[str]] = {aid: [] for aid in self.by_id}
        for a in plan.actions:
            deps = {d for d in a.depends_on if d in self.by_id}
            self.waiting_on[a.id] = len(deps)
            for d in deps:
                self.dependents[d].append(a.id)
        self.ready = [(self.order[a.id], a.id) for a in plan.actions if self.waiting_on[a.id] == 0]  # a heap
        self.locks = _Locks()
        self.lost = ""  # why nothing new starts: the connection was lost
        self.on_result = on_result

    def settle(self, settled: Mapping[str, ActionResult]) -> None:
        """Take in what an earlier run ended (see `execute`)."""
        if any(r.connection_lost for r in settled.values()):
            self.lost = "the connection to the host was lost"
        now = time.time()
        for aid in sorted(self.by_id, key=self.order.__getitem__):
            action = self.by_id[aid]
            cause = next((settled[d] for d in action.depends_on if d in settled
                          and settled[d].status in (Status.FAILED, Status.SKIPPED)), None)
            if cause is not None and aid not in self.results:
                self.finish(ActionResult(action, Status.SKIPPED, f"because {cause.action.id} {cause.status.value}",
                                         now, now))

    def startable(self, room: int) -> list[Action]:
        """Up to `room` ready actions whose keys are free, their keys taken; the rest stay ready."""
        out: list[Action] = []
        deferred = []  # ready, but what they act on is busy
        while self.ready and len(out) < room:
            _, aid = heapq.heappop(self.ready)
            action = self.by_id[aid]
            if aid in self.results:  # skipped meanwhile
                continue
            if self.lost:
                now = time.time()
                self.finish(ActionResult(action, Status.SKIPPED, f"not attempted: {self.lost}", now, now))
                continue
            wanted = locks_of(action)
            if self.locks.free(wanted):
                self.locks.take(wanted)
                out.append(action)
            else:
                deferred.append((self.order[aid], aid))
        for item in deferred:
            heapq.heappush(self.ready, item)
        return out

    def ended(self, action: Action, result: ActionResult) -> None:
        self.locks.release(locks_of(action))
        if result.connection_lost and not self.lost:
            self.lost = "the connection to the host was lost"
        self.finish(result)

    def finish(self, result: ActionResult) -> None:
        """Record a result; its dependents become ready, or are skipped with it as the cause."""
        self.results[result.action.id] = result
        if self.on_result:
            self.on_result(result)
        failed = result.status in (Status.FAILED, Status.SKIPPED)
        for dep in self.dependents[result.action.id]:
            if dep in self.results:
                continue
            if failed:
                now = time.time()
                self.finish(ActionResult(self.by_id[dep], Status.SKIPPED,
                                         f"because {result.action.id} {result.status.value}", now, now))
                continue
            self.waiting_on[dep] -= 1
            if self.waiting_on[dep] == 0:
                heapq.heappush(self.ready, (self.order[dep], dep))


def attempt(host: Host, action: Action, force: bool) -> ActionResult:
    """Run one action, trying again what the host calls a temporary failure."""
    t0 = time.time()
    temporary: list[str] = []  # the temporary failures so far
    while True:
        try:
            done = run_action(host, action, force)
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
    message = done.message
    if temporary:
        retried = f"after {len(temporary)} temporary failure{'s' if len(temporary) > 1 else ''}: {temporary[-1]}"
        message = f"{message}; {retried}" if message else retried
    return ActionResult(action, done.status, message, t0, time.time(), outcome=done.outcome,
                        attempts=len(temporary) + 1)
