"""Run a `Plan` against a host: dependency order, bounded parallelism, partial results.

An action runs once everything it depends on has succeeded; if a dependency failed or was
skipped, it is skipped with that cause, while independent branches go on. Each primitive
re-checks its precondition right before acting, so an action whose work is already done
ends as UNCHANGED instead of failing. The result always covers every action.

The executor knows nothing of YAML, output formats or libvirt: it drives any object with
the `Host` methods below.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable
from typing import Protocol

from . import seed, sources
from .errors import ReconcileError
from .model import DEFAULT_STOP_TIMEOUT, Action, ActionKind, ActionResult, ApplyResult, Plan, ResourceKind, Status

DEFAULT_PARALLEL = 4


class Host(Protocol):
    def define_domain(self, name: str, xml: str, autostart: bool) -> None: ...
    def domain_exists(self, name: str) -> bool: ...
    def start_domain(self, name: str) -> bool: ...
    def stop_domain(self, name: str, timeout: float, force: bool = False) -> str: ...
    def undefine_domain(self, name: str) -> bool: ...
    def apply_live(self, name: str, ops: list[tuple]) -> list[str]: ...
    def ensure_pool(self, name: str, path: str) -> bool: ...
    def ensure_network(self, name: str, xml: str) -> bool: ...
    def volume_exists(self, pool_name: str, name: str) -> bool: ...
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


def run_action(host: Host, action: Action, force: bool = False) -> tuple[Status, str]:
    """Do one action; UNCHANGED when the re-check finds the work already done."""
    p = action.payload
    kind, res = action.kind, action.resource
    if res is ResourceKind.POOL:
        changed = host.ensure_pool(p.name, p.path)
        return (Status.APPLIED, "") if changed else (Status.UNCHANGED, "already exists and is active")
    if res is ResourceKind.NETWORK:
        changed = host.ensure_network(action.name, p["xml"])
        return (Status.APPLIED, "") if changed else (Status.UNCHANGED, "already exists, active and autostarted")
    if res is ResourceKind.IMAGE:
        if host.volume_exists(p["pool"], p["name"]):
            return Status.UNCHANGED, "already imported"
        with sources.ImageSource(p["source"], p.get("sha256")) as src:
            changed = host.upload_volume(p["pool"], p["name"], src, p["format"])
            size = src.done
        if not changed:
            return Status.UNCHANGED, "already imported"
        return Status.APPLIED, f"{size} bytes" + (", sha256 verified" if p.get("sha256") else "")
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
            return (Status.APPLIED, "") if changed else (Status.UNCHANGED, "already running")
        if kind is ActionKind.STOP:
            timeout = p.get("stop_timeout")
            how = host.stop_domain(action.name, DEFAULT_STOP_TIMEOUT if timeout is None else timeout, force)
            return (Status.UNCHANGED, how) if how == "already stopped" else (Status.APPLIED, how)
        if kind is ActionKind.DESTROY:
            changed = host.undefine_domain(action.name)
            return (Status.APPLIED, "") if changed else (Status.UNCHANGED, "already gone")
    raise ValueError(f"no way to {kind.value} a {res.value}")


def execute(plan: Plan, host: Host, parallel: int = DEFAULT_PARALLEL, force: bool = False,
            on_result: Callable[[ActionResult], None] | None = None) -> ApplyResult:
    """Run every action of `plan`; `on_result` is called as each one ends (for progress)."""
    started = time.monotonic()
    by_id = {a.id: a for a in plan.actions}
    results: dict[str, ActionResult] = {}
    pending = dict(by_id)

    def finish(result: ActionResult) -> None:
        results[result.action.id] = result
        if on_result:
            on_result(result)

    def attempt(action: Action) -> ActionResult:
        t0 = time.time()
        try:
            status, message = run_action(host, action, force)
        except ReconcileError as exc:
            status, message = Status.FAILED, str(exc)
        return ActionResult(action, status, message, t0, time.time())

    with cf.ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="reconcile") as pool:
        running: dict[cf.Future[ActionResult], str] = {}
        while pending or running:
            for aid, action in list(pending.items()):
                deps = [d for d in action.depends_on if d in by_id]
                if any(d in results and results[d].status in (Status.FAILED, Status.SKIPPED) for d in deps):
                    cause = next(d for d in deps if results[d].status in (Status.FAILED, Status.SKIPPED))
                    now = time.time()
                    finish(ActionResult(action, Status.SKIPPED, f"because {cause} {results[cause].status.value}", now, now))
                    del pending[aid]
                elif all(d in results for d in deps):
                    running[pool.submit(attempt, action)] = aid
                    del pending[aid]
            if not running:
                if pending and not any(all(d in results for d in a.depends_on if d in by_id) for a in pending.values()):
                    raise RuntimeError(f"plan has a dependency cycle among {sorted(pending)}")
                continue
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in done:
                running.pop(future)
                finish(future.result())

    ordered = tuple(results[a.id] for a in plan.actions)
    return ApplyResult(plan=plan, results=ordered, wall_time=time.monotonic() - started)
