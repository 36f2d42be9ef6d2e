"""One run at a time per host and project: a lock kept by libvirtd itself.

Two pipeline runs against one host, from one machine or two, must not both act: the lock
lives on the libvirt host (see `LibvirtHost.take_lock`), not in a local file. The holder
writes who it is (host, pid, since) and renews a heartbeat every `HEARTBEAT` seconds.

A lock whose holder is gone is stale and taken over without asking: on the same machine
when its pid no longer runs (a run killed with SIGKILL), from anywhere when its heartbeat
is older than `STALE_AFTER`. `break_lock` removes a lock whatever its state, for the case
a person has checked by hand.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..errors import ReconcileError

HEARTBEAT = 10.0
STALE_AFTER = 60.0
DEFAULT_LOCK_TIMEOUT = 60.0


class LockHost(Protocol):
    def take_lock(self, name: str, holder: dict[str, str]) -> tuple[str | None, dict[str, str]]: ...
    def read_lock(self, name: str) -> dict[str, str] | None: ...
    def renew_lock(self, name: str, token: str, holder: dict[str, str]) -> bool: ...
    def drop_lock(self, name: str, token: str) -> bool: ...
    def reconnect(self) -> None: ...


class LockHeld(ReconcileError):
    """Another run holds the lock and did not let go in time."""

    kind = "lock held"


def lock_name(project: str) -> str:
    """The name of the project's lock on the host; it sorts beside the project's resources."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in project)
    return f"{safe}.reconcile-lock"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _age(stamp: str) -> float | None:
    try:
        return (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(stamp)).total_seconds()
    except (TypeError, ValueError):
        return None


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True  # runs, as another user; or unreadable: assume alive
    return True


def stale_reason(holder: dict[str, str], hostname: str) -> str | None:
    """Why a held lock is stale, or None if its holder may still be at work."""
    if holder.get("host") == hostname and holder.get("pid") and not _pid_alive(holder["pid"]):
        return f"its process {holder['pid']} on {hostname} is gone"
    age = _age(holder.get("heartbeat", holder.get("since", "")))
    if age is None and holder.get("token") and not holder.get("host"):
        return "it records no holder"
    if age is not None and age > STALE_AFTER:
        return f"its holder has not renewed it for {age:.0f}s"
    return None


def describe(holder: dict[str, str]) -> str:
    age = _age(holder.get("heartbeat", ""))
    beat = f", last heartbeat {age:.0f}s ago" if age is not None else ""
    return (f"held by pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"since {holder.get('since', '?')}{beat} ({holder.get('command', 'reconcile')})")


def clear_stale(host: LockHost, project: str) -> str | None:
    """Remove the project's lock when its holder is gone; say what was removed.

    A run killed with SIGKILL leaves its lock behind, and a run with nothing to do takes no
    lock, so without this a stale one would stay until the next run that changes something.
    A lock whose holder may still be at work is left alone.
    """
    name = lock_name(project)
    holder = host.read_lock(name)
    if not holder or not holder.get("token"):
        return None
    why = stale_reason(holder, socket.gethostname())
    if why is None:
        return None
    host.drop_lock(name, holder["token"])
    return f"removed the stale lock {name}: {describe(holder)}, but {why}"


class RunLock:
    """Take with `acquire`, give back with `release` (safe to call when not taken)."""

    def __init__(self, host: LockHost, project: str, command: str = "reconcile",
                 on_wait: Callable[[str], None] | None = None):
        self.host = host
        self.project = project
        self.name = lock_name(project)
        self.hostname = socket.gethostname()
        self.holder = {"host": self.hostname, "pid": str(os.getpid()), "since": _now(), "heartbeat": _now(),
                       "command": command}
        self.token: str | None = None
        self.on_wait = on_wait
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self, timeout: float = DEFAULT_LOCK_TIMEOUT, break_lock: bool = False) -> None:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            self.holder["since"] = self.holder["heartbeat"] = _now()
            token, current = self.host.take_lock(self.name, self.holder)
            if token:
                self.token = token
                self._beat = threading.Thread(target=self._heartbeat, name="reconcile-lock", daemon=True)
                self._beat.start()
                return
            stale = stale_reason(current, self.hostname) if current else None
            if current and current.get("token") and (stale or break_lock):
                if self.on_wait:
                    self.on_wait(f"taking over the lock {self.name}: {describe(current)}, but {stale}"
                                 if stale else f"breaking the lock {self.name}, {describe(current)}")
                self.host.drop_lock(self.name, current["token"])
                break_lock = False  # break once; a run that then takes it is live
                continue
            if not current:
                continue  # released between our attempt and the look
            if time.monotonic() >= deadline:
                raise LockHeld(
                    f"another run is acting on project '{self.project}' on this libvirt host: the lock "
                    f"{self.name} is {describe(current)}; "
                    f"waited {timeout:g}s (--lock-timeout). If that run is dead and its host cannot tell "
                    f"(another machine), wait {STALE_AFTER:.0f}s for its heartbeat to go stale or pass --break-lock")
            if not told and self.on_wait:
                self.on_wait(f"waiting up to {timeout:g}s for the lock {self.name}, {describe(current)}")
                told = True
            time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            self.holder["heartbeat"] = _now()
            try:
                if not self.host.renew_lock(self.name, self.token, self.holder):
                    return
            except ReconcileError:
                continue  # the host is away; the run itself will notice and say so

    def release(self) -> None:
        self._stop.set()
        if self._beat:
            self._beat.join(timeout=5)
        if self.token:
            try:
                self.host.drop_lock(self.name, self.token)
            except ReconcileError:
                # The connection broke (libvirtd restarted mid-run): a new one may well work.
                try:
                    self.host.reconnect()
                    self.host.drop_lock(self.name, self.token)
                except ReconcileError:
                    pass  # left behind; the next plan or apply finds it stale (our pid is gone) and removes it
            self.token = None
