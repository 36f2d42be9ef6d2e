"""Waiting for a lab to be usable: each running domain's readiness conditions, checked
over and over, in parallel, until they hold or the domain's time is up.

A domain's wait begins when it is started (or at once when it already runs), so the first
domains of a large apply are checked while the last are still being created. Each round
reads every waiting domain from the host in one pass (one DHCP lease listing per network
for all of them), then probes TCP ports and guest agents from a small pool of threads. A
condition that held once stays met: the console line was printed, the port did answer.

A domain the run starts counts only a lease handed out after its start: dnsmasq keeps a
lease for an hour, and derived MACs are stable, so the lease of a domain's previous life
is there before the new guest has even booted (the reason waits elsewhere return too early).
"""

from __future__ import annotations

import concurrent.futures as cf
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from ..errors import HostError, HostUnavailable
from ..model import (Address, AddressSource, Check, Condition, ConditionKind, DomainSpec, Guest, Readiness, Ready,
                     one_line)

DEFAULT_WAIT_TIMEOUT = 300.0  # seconds per domain: a cloud image with cloud-init boots in one to three minutes
POLL = 0.5  # seconds between two looks at a waiting domain
TCP_TIMEOUT = 2.0
AGENT_TIMEOUT = 2


def conditions_for(spec: DomainSpec, guest: Guest) -> tuple[Condition, ...]:
    """The spec's `ready:`, or the default: an address when an interface is on a network
    that hands them out (DHCP), or may (one that could not be read), else just running."""
    if spec.ready is not None:
        return spec.ready.conditions()
    return Ready(address=guest.on_dhcp is not False).conditions()


def tcp_accepts(ip: str, port: int, timeout: float = TCP_TIMEOUT) -> tuple[bool, str]:
    """Whether `ip:port` accepts a TCP connection, and what was seen."""
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True, f"{ip}:{port} accepts connections"
    except socket.timeout:
        return False, f"{ip}:{port}: no answer within {timeout:g}s"
    except OSError as exc:
        return False, f"{ip}:{port}: {exc.strerror or exc}"


@dataclass
class _Watch:
    spec: DomainSpec
    begun: float | None = None  # monotonic time its wait began
    fresh_after: dict[str, int] | None = None  # MAC -> expiry of a lease from before its start
    checks: dict[Condition, Check] = field(default_factory=dict)
    result: Readiness | None = None
    probe: cf.Future | None = None  # this domain's checks under way


class Checker:
    """Checks a domain's conditions against what the host says about it now."""

    def __init__(self, host, tcp: Callable[[str, int], tuple[bool, str]] = tcp_accepts,
                 on_check: Callable[[str, Check], None] | None = None):
        self.host, self.tcp, self.on_check = host, tcp, on_check

    def evaluate(self, w: _Watch, guest: Guest) -> tuple[Check, ...]:
        """This round's checks of one domain; conditions met before stay met."""
        now = time.monotonic() - (w.begun or time.monotonic())
        conditions = conditions_for(w.spec, guest)
        address = fresh_address(guest, w.fresh_after)
        out = []
        known = dict(w.checks)  # replaced whole at the end: the waiter's thread may read it meanwhile
        for cond in conditions:
            before = known.get(cond)
            if before is not None and before.met:
                out.append(before)
                continue
            met, seen = self._check(cond, guest, address)
            final = not met and cond.kind is ConditionKind.AGENT and guest.running and not guest.agent_channel
            if final:
                seen = ("the domain has no guest agent channel (guest_agent: true adds it at the domain's next "
                        "start: apply --restart)")
            check = Check(cond, met, one_line(seen), round(now, 1) if met else None, final=final)
            if met and self.on_check and cond.kind is not ConditionKind.RUNNING:
                self.on_check(w.spec.name, check)
            known[cond] = check
            out.append(check)
        w.checks = known
        return tuple(out)

    def _check(self, cond: Condition, guest: Guest, address: tuple[Address | None, str]) -> tuple[bool, str]:
        if not guest.running:
            return False, f"the domain is {guest.state}"
        kind = cond.kind
        if kind is ConditionKind.RUNNING:
            return True, "running"
        if kind is ConditionKind.ADDRESS:
            return address[0] is not None, str(address[0]) if address[0] else address[1]
        if kind is ConditionKind.TCP:
            if address[0] is None:
                return False, f"no address to try ({address[1]})"
            return self.tcp(address[0].ip, cond.port)
        if kind is ConditionKind.CONSOLE:
            return console_match(self.host, guest, cond.pattern or "")
        try:
            self.host.agent_ping(guest.name, AGENT_TIMEOUT)
            return True, "the guest agent answers"
        except HostError as exc:
            return False, str(exc).split(": ", 1)[-1]


class Waiter:
    """Waits for the readiness of some domains, on a thread of its own.

    A domain is checked from `watch(name)` on (with the lease expiries from before its
    start, when the run starts it), or gets a verdict at once from `gave_up(name, why)`.
    `finish()` watches the rest from then, and returns every domain's verdict.
    `on_check(domain, check)` is called as a condition comes to hold, `on_done(readiness)`
    when a domain's wait ends; both from the waiter's threads.
    """

    def __init__(self, host, specs: Iterable[DomainSpec], timeout: float = DEFAULT_WAIT_TIMEOUT,
                 on_check: Callable[[str, Check], None] | None = None,
                 on_done: Callable[[Readiness], None] | None = None,
                 tcp: Callable[[str, int], tuple[bool, str]] = tcp_accepts, poll: float = POLL):
        self.host, self.timeout, self.poll = host, timeout, poll
        self.checker = Checker(host, tcp, on_check)
        self.on_done = on_done
        self.watches = {s.name: _Watch(s) for s in specs}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="reconcile-wait", daemon=True)
        self._probes = cf.ThreadPoolExecutor(max_workers=16, thread_name_prefix="reconcile-probe")
        self._thread.start()

    def lease_baseline(self) -> dict[str, int]:
        """The newest lease expiry per MAC now, on every network (a domain whose interfaces
        the spec leaves unmanaged has its own), to tell a later lease from one of before.
        Unreadable, it is empty: a lease then counts however old."""
        try:
            return self.host.lease_expiries()
        except HostError:
            return {}

    def watch(self, name: str, fresh_after: dict[str, int] | None = None) -> None:
        with self._lock:
            w = self.watches[name]
            if w.begun is None and w.result is None:
                w.begun, w.fresh_after = time.monotonic(), fresh_after
        self._wake.set()

    def gave_up(self, name: str, why: str) -> None:
        """The domain cannot be ready (the run did not start it, the host is gone), and why."""
        with self._lock:
            w = self.watches[name]
            if w.result is not None:
                return
            waited = time.monotonic() - w.begun if w.begun is not None else 0.0
            w.result = Readiness(name, (Check(Condition(ConditionKind.RUNNING), False, why),), waited)
        self._done(w.result)

    def pending(self) -> int:
        """How many domains have no verdict yet."""
        with self._lock:
            return sum(1 for w in self.watches.values() if w.result is None)

    def finish(self) -> tuple[Readiness, ...]:
        """Every domain's verdict, once each is ready or out of time; a domain that was
        neither started nor given up on is watched from now."""
        with self._lock:
            self._closing = True
            waiting = [n for n, w in self.watches.items() if w.begun is None and w.result is None]
        for name in waiting:
            self.watch(name)
        self._wake.set()
        self._thread.join()
        self._probes.shutdown(wait=False, cancel_futures=True)  # a probe stuck past its domain's time is left
        for name, w in self.watches.items():  # the loop ended without a verdict (it failed): say so
            if w.result is None:
                self.gave_up(name, "the wait itself failed; see the error above")
        return tuple(w.result for w in self.watches.values() if w.result is not None)

    def _loop(self) -> None:
        try:
            while self._step():
                self._wake.wait(self.poll)
                self._wake.clear()
        except Exception as exc:  # a bug, not a guest's state: every domain still waiting gets it as its verdict
            import traceback

            traceback.print_exc()
            for name, w in list(self.watches.items()):
                if w.result is None:
                    self.gave_up(name, f"the wait failed: {exc!r} (a bug in reconcile; please report it)")

    def _step(self) -> bool:
        """One round: collect the probes that ended, start new ones for the domains without one
        under way, and give each domain out of time its verdict. False once all are done."""
        with self._lock:
            active = [w for w in self.watches.values() if w.begun is not None and w.result is None]
            if self._closing and all(w.result is not None for w in self.watches.values()):
                return False
        idle = [w for w in active if w.probe is None]
        if idle:
            try:
                guests = self.host.guests([w.spec.name for w in idle])
            except HostUnavailable as exc:  # nothing more can be learnt: every wait ends now, with the reason
                for w in active:
                    self.gave_up(w.spec.name, str(exc))
                return True
            except HostError as exc:
                guests = {w.spec.name: Guest(w.spec.name, "unknown", address_note=one_line(str(exc))) for w in idle}
            for w in idle:
                w.probe = self._probes.submit(self.checker.evaluate, w, guests[w.spec.name])
        cf.wait([w.probe for w in active if w.probe is not None], timeout=self.poll)
        now = time.monotonic()
        for w in active:
            checks = None
            if w.probe is not None and w.probe.done():
                checks, w.probe = w.probe.result(), None
            waited = now - w.begun
            if checks is not None and (all(c.met for c in checks) or any(c.final for c in checks)):
                self._verdict(w, checks, waited)
            elif waited >= self.timeout:
                self._verdict(w, checks or self._last(w), waited)
        with self._lock:  # the last verdict is in: no need to sleep once more
            return not (self._closing and all(w.result is not None for w in self.watches.values()))

    def _last(self, w: _Watch) -> tuple[Check, ...]:
        """What was seen last, for a domain whose probe has not ended in time."""
        checks = tuple(w.checks.values()) or (Check(Condition(ConditionKind.RUNNING), False, "not checked yet"),)
        return tuple(c if c.met else replace(c, seen=f"{c.seen} (still being checked when the time was up)")
                     for c in checks)

    def _verdict(self, w: _Watch, checks: tuple[Check, ...], waited: float) -> None:
        with self._lock:
            if w.result is not None:
                return
            w.result = Readiness(w.spec.name, checks, waited)
        self._done(w.result)

    def _done(self, readiness: Readiness) -> None:
        if self.on_done:
            self.on_done(readiness)


def fresh_address(guest: Guest, fresh_after: dict[str, int] | None) -> tuple[Address | None, str]:
    """The domain's address, leaving out a lease older than its start; or why there is none."""
    stale = []
    for a in guest.addresses:
        if a.source is AddressSource.LEASE and fresh_after is not None and a.mac in fresh_after \
                and a.expires is not None and a.expires <= fresh_after[a.mac]:
            stale.append(a.ip)
            continue
        return a, ""
    if stale:
        return None, (f"only the lease of {', '.join(stale)} from before the domain was started; no new one yet "
                      "(does the guest run a DHCP client?)")
    return None, guest.address_note or "no address known"


def console_match(host, guest: Guest, pattern: str) -> tuple[bool, str]:
    """Whether a line of the domain's console log matches; else the last line seen."""
    if not guest.console_log:
        return False, "the domain has no console log"
    try:
        text = host.console_log(guest.console_log)
    except HostError as exc:
        return False, str(exc)
    regex = re.compile(pattern)
    last = ""
    for line in text.splitlines():
        line = line.rstrip("\r")
        if regex.search(line):
            return True, f"console: {_clip(line)}"
        if line.strip():
            last = line
    return False, f"last console line: {_clip(last)}" if last else "nothing on the console yet"


def _clip(text: str, width: int = 120) -> str:
    text = one_line(text)
    return text if len(text) <= width else text[: width - 3] + "..."


def snapshot(host, specs: Iterable[DomainSpec], tcp: Callable[[str, int], tuple[bool, str]] = tcp_accepts) -> tuple[dict[str, Guest], tuple[Readiness, ...]]:
    """Each domain's guest and readiness right now, without waiting (for `status`); the
    probes of all domains run at once."""
    specs = list(specs)
    guests = host.guests([s.name for s in specs])
    checker = Checker(host, tcp)
    with cf.ThreadPoolExecutor(max_workers=16, thread_name_prefix="reconcile-probe") as pool:
        futures = [pool.submit(checker.evaluate, _Watch(s, begun=time.monotonic()), guests[s.name]) for s in specs]
        return guests, tuple(Readiness(s.name, f.result()) for s, f in zip(specs, futures))
