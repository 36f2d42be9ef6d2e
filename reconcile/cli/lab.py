"""The commands about the lab once it runs: `status`, `wait`, `inventory`, `ssh-config`,
and the wait of `apply --wait`. Reads only; the waits and probes are the effects."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .. import spec as specs
from ..apply.ready import Waiter, snapshot
from ..codec import inventory as inv
from ..model import ActionResult, Check, Desired, DomainSpec, Guest, Readiness, State, Status
from ..model.steps import StartDomain
from . import render
from .output import Output, Progress
from .parser import EXIT_ERROR, EXIT_OK


def named(desired: Desired) -> list[DomainSpec]:
    """The domains a lab command is about: every one the specs name, but those meant absent."""
    return [d for d in desired.domains if d.state is not State.ABSENT]


def run_lab(args: argparse.Namespace, desired: Desired, host, console: Output) -> int:
    if args.command == "status":
        return status(desired, host, console)
    if args.command == "wait":
        return wait(args, desired, host, console)
    hosts = inv.hosts_of(named(desired), host.guests([d.name for d in named(desired)]))
    _inventory_out(args, desired, hosts, console, host.uri)
    return EXIT_OK


# ------------------------------------------------------------------ status

def status_rows(desired: Desired, host) -> list[tuple[DomainSpec, Guest, Readiness]]:
    """Each domain of the specs with what the host says of it and whether it is ready."""
    wanted = named(desired)
    guests, readiness = snapshot(host, [d for d in wanted if d.state is State.RUNNING])
    by_name = {r.domain: r for r in readiness}
    others = host.guests([d.name for d in wanted if d.state is not State.RUNNING])
    rows = []
    for d in wanted:
        guest = guests.get(d.name) or others[d.name]
        r = by_name.get(d.name) or Readiness(d.name, (), skipped=f"its spec says {d.state.value}")
        rows.append((d, guest, r))
    return rows


def status(desired: Desired, host, console: Output) -> int:
    wanted = named(desired)
    rows = status_rows(desired, host)
    if console.json:
        console.out(render.dumps({"format_version": render.FORMAT_VERSION, "kind": "status", "project": desired.project,
                                  "uri": host.uri, "domains": [status_json(d, g, r) for d, g, r in rows]}))
    else:
        width = max((len(d.name) for d in wanted), default=0)
        for d, g, r in rows:
            console.out(status_line(d, g, r, width))
        if not rows:
            console.out("The specs name no domain.")
    return EXIT_OK


def status_line(spec: DomainSpec, guest: Guest, r: Readiness, width: int) -> str:
    parts = [spec.name.ljust(width), guest.state]
    if guest.nics:
        parts.append(" ".join(n.mac for n in guest.nics))
    if guest.addresses:
        parts.append(", ".join(str(a) for a in guest.addresses))
    elif guest.running:
        parts.append(f"no address ({guest.address_note})" if guest.address_note else "no address")
    reserved = [i.ip for i in spec.interfaces or () if i.ip and i.ip not in {a.ip for a in guest.addresses}]
    if reserved:
        parts.append("reserved " + ", ".join(reserved))
    if guest.vnc:
        parts.append(f"vnc {guest.vnc}")
    if guest.console_pty:
        parts.append(f"console {guest.console_pty}")
    if guest.console_log:
        parts.append(f"log {guest.console_log}")
    parts.append(readiness_word(r))
    return "  ".join(parts)


def readiness_word(r: Readiness) -> str:
    if r.skipped:
        return f"not waited for ({r.skipped})"
    if r.ready:
        return "ready (" + ", ".join(str(c.condition) for c in r.checks) + ")"
    failed = r.failed
    return f"not ready: {failed.condition}: {failed.seen}" if failed else "not ready"


def status_json(spec: DomainSpec, guest: Guest, r: Readiness) -> dict[str, Any]:
    return {
        "name": spec.name,
        "state": guest.state,
        "uuid": guest.uuid,
        "interfaces": [{"mac": n.mac, "network": n.network, "model": n.model} for n in guest.nics],
        "reserved": [{"network": i.network, "ip": i.ip, "mac": i.mac or i.derived_mac}
                     for i in spec.interfaces or () if i.ip],
        "addresses": [{"ip": a.ip, "source": a.source.value, "mac": a.mac, "prefix": a.prefix}
                      for a in guest.addresses],
        "address_note": guest.address_note or None,
        "vnc": guest.vnc,
        "console": {"pty": guest.console_pty, "log": guest.console_log},
        "agent_channel": guest.agent_channel,
        "readiness": readiness_json(r),
    }


def readiness_json(r: Readiness) -> dict[str, Any]:
    return {"domain": r.domain, "ready": r.ready, "skipped": r.skipped or None, "waited": round(r.waited, 1),
            "conditions": [{"condition": str(c.condition), "kind": c.condition.kind.value, "met": c.met,
                            "seen": c.seen, "at": c.at} for c in r.checks]}


def run_lab_many(args: argparse.Namespace, desired: Desired, console: Output, connect) -> int:
    """The lab commands over every host of the run: each host read at once; one that
    cannot be reached is named, and the others are reported (exit 1)."""
    from .hosts import targets_of
    from .targets import each

    targets = targets_of(desired, args, connect)
    for t in targets:
        t.host.connect_early()
    try:
        if args.command == "wait":
            codes: dict[str, int] = {}
            each(targets, lambda t: codes.__setitem__(t.label, wait(args, t.desired, t.host, console)))
            for t in targets:
                if t.error:
                    console.err(f"error: host {t.label} ({t.uri}): {t.error}")
            return EXIT_OK if all(c == EXIT_OK for c in codes.values()) and not any(t.error for t in targets) \
                else EXIT_ERROR
        found: dict[str, Any] = {}
        if args.command == "status":
            each(targets, lambda t: found.__setitem__(t.label, status_rows(t.desired, t.host)))
        else:
            each(targets, lambda t: found.__setitem__(t.label, inv.hosts_of(
                named(t.desired), t.host.guests([d.name for d in named(t.desired)]))))
        down = [t for t in targets if t.error]
        for t in down:
            console.err(f"error: host {t.label} ({t.uri}) could not be read: {t.error}")
        if args.command == "status":
            _status_many(targets, found, desired, console)
        else:
            hosts = [h for t in targets if t.label in found for h in found[t.label]]
            _inventory_out(args, desired, hosts, console, " and ".join(f"{t.label}" for t in targets))
        return EXIT_ERROR if down else EXIT_OK
    finally:
        for t in targets:
            t.host.close()


def _status_many(targets, found, desired: Desired, console: Output) -> None:
    if console.json:
        console.out(render.dumps({
            "format_version": render.FORMAT_VERSION, "kind": "status", "project": desired.project,
            "uri": next((t.uri for t in targets if t.name is None), targets[0].uri if targets else ""),
            "domains": [{**status_json(d, g, r), "host": t.label} for t in targets for d, g, r in found.get(t.label, ())],
            "hosts": [{"name": t.label, "uri": t.uri, "available": not t.error, **({"error": t.error} if t.error else {})}
                      for t in targets]}))
        return
    width = max((len(d.name) for rows in found.values() for d, _, _ in rows), default=0)
    for t in targets:
        if t.label not in found:
            continue
        console.out(f"Host {t.label} ({t.uri}):")
        for d, g, r in found[t.label]:
            console.out("  " + status_line(d, g, r, width))
        if not found[t.label]:
            console.out("  The specs name no domain here.")


def _inventory_out(args: argparse.Namespace, desired: Desired, hosts, console: Output, where: str) -> None:
    for h in hosts:
        if not h.known:
            console.note(f"{h.name}: no address yet: {h.why}")
    if args.command == "ssh-config":
        config = inv.ssh_config(hosts, f"reconcile ssh-config: project {desired.project} on {where}")
        if console.json:
            console.out(render.dumps({"format_version": render.FORMAT_VERSION, "kind": "ssh-config",
                                      "project": desired.project, "uri": where, "config": config,
                                      "missing": [{"name": h.name, "reason": h.why} for h in hosts if not h.known]}))
        else:
            console.out(config.rstrip("\n"))
    elif args.list or console.json:
        console.out(render.dumps(inv.inventory_list(desired.project, hosts)))
    else:
        header = f"# reconcile inventory: project {desired.project} on {where}\n"
        missing = "".join(f"# {h.name}: no address yet: {h.why}\n" for h in hosts if not h.known)
        console.out((header + missing + specs.dump(inv.inventory_yaml_data(desired.project, hosts))).rstrip("\n"))


# ------------------------------------------------------------------ waiting

def check_line(domain: str, check: Check) -> str:
    return f"  ✓ {domain}: {check.condition}: {check.seen} [{check.at:.1f}s]"


def readiness_line(r: Readiness) -> str:
    if r.ready:
        return f"  ready {r.domain} [{r.waited:.1f}s]"
    failed = r.failed
    what = f"{failed.condition}: {failed.seen}" if failed else "no verdict"
    return f"  not ready {r.domain}: {what} [{r.waited:.1f}s]"


def readiness_recap(results: tuple[Readiness, ...], timeout: float) -> str:
    ready = sum(1 for r in results if r.ready)
    text = f"Ready: {ready} of {len(results)} domains"
    late = [r for r in results if not r.ready]
    if late:
        text += f"; not ready within {timeout:g}s: " + ", ".join(r.domain for r in late)
    return text


def make_waiter(args: argparse.Namespace, specs_: list[DomainSpec], host, say: Callable[[str], None]) -> Waiter:
    return Waiter(host, specs_, timeout=args.wait_timeout,
                  on_check=lambda name, check: say(check_line(name, check)),
                  on_done=lambda r: say(readiness_line(r)))


def wait(args: argparse.Namespace, desired: Desired, host, console: Output) -> int:
    running = [d for d in named(desired) if d.state is State.RUNNING]
    host.guests([d.name for d in running])  # a host that cannot be reached is an error, not a wait
    with Progress(console, 0, False) as progress:
        console.info(f"Waiting for {len(running)} domain{'s' if len(running) != 1 else ''} "
                     f"(at most {args.wait_timeout:g}s each):")
        waiter = make_waiter(args, running, host, progress.line)
        for d in running:
            waiter.watch(d.name)
        results = waiter.finish()
    return report_readiness(results, args, console, doc={"format_version": render.FORMAT_VERSION, "kind": "wait",
                                                         "project": desired.project, "uri": host.uri})


def report_readiness(results: tuple[Readiness, ...], args: argparse.Namespace, console: Output,
                     doc: dict[str, Any] | None) -> int:
    ok = all(r.ready for r in results)
    if doc is not None and console.json:
        doc.update(readiness=[readiness_json(r) for r in results], ok=ok)
        console.out(render.dumps(doc))
    elif not console.json:
        if args.quiet:
            for r in results:
                if not r.ready:
                    console.err(readiness_line(r))
        console.out(readiness_recap(results, args.wait_timeout))
    return EXIT_OK if ok else EXIT_ERROR


class ApplyWait:
    """`apply --wait`: each running domain's wait begins when the run starts it (or at once,
    when the plan does not start it), while the rest of the apply goes on."""

    def __init__(self, args: argparse.Namespace, desired: Desired, plan, host, say: Callable[[str], None]):
        refused = {n.name for n in plan.refusals}  # reported by the plan, not waited for
        self.starts = {a.name for a in plan.actions if isinstance(a.payload, StartDomain)}
        if args.command == "rebuild":  # the domains it starts again
            self.specs = [d for d in desired.domains if d.name in self.starts]
        else:
            self.specs = [d for d in desired.domains if d.state is State.RUNNING and d.name not in refused]
        self.waiter = make_waiter(args, self.specs, host, say)
        self.baseline = self.waiter.lease_baseline() if any(d.name in self.starts for d in self.specs) else {}
        for d in self.specs:
            if d.name not in self.starts:
                self.waiter.watch(d.name)

    def finished(self, result: ActionResult) -> None:
        if not isinstance(result.action.payload, StartDomain) or result.action.name not in self.starts:
            return
        name = result.action.name
        if result.status is Status.APPLIED:
            self.waiter.watch(name, self.baseline)
        elif result.status is Status.UNCHANGED:
            self.waiter.watch(name)  # it was running already: its lease is its own
        else:
            self.waiter.gave_up(name, f"not started: {result.status.value} ({result.message})")

    def finish(self) -> tuple[Readiness, ...]:
        return self.waiter.finish()
