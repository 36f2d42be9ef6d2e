"""How a change reaches a running domain (its change class), and what a live one does.

Pure: no libvirt, no files, no clock. See docs/specs.md, "Change classes".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from ..model import Change, ChangeClass, DomainSpec, Observed
from ..model.steps import ChangeMedia, LiveChange, SetMemory, SetVcpus


def canonical(spec: DomainSpec, observed: Observed, have: dict) -> dict:
    """The spec's essence, with a machine alias such as `pc` taken as what it expands to."""
    want = spec.essence()
    machine = want.get("machine")
    if machine and have.get("machine") and machine != have["machine"]:
        if observed.machine_aliases.get((spec.arch, machine)) == have["machine"]:
            want["machine"] = have["machine"]
    return want


def classify(change: Change, want: dict, have: dict) -> ChangeClass:
    """How a change reaches a running domain (see docs/specs.md, "Change classes")."""
    path = change.path
    top = path[0]
    if top in ("type", "arch") or (top == "disks" and path[-1] == "format"):
        return ChangeClass.RECREATE
    if top in ("autostart", "volumes", "owner", "state"):
        return ChangeClass.LIVE
    if top == "current_memory":
        # The balloon moves within the maximum the domain was started with.
        within = want.get("memory") == have.get("memory") and (change.after or 0) <= (have.get("memory") or 0)
        return ChangeClass.LIVE if within else ChangeClass.RESTART
    if top == "vcpus":
        # Plugging in vcpus up to the maximum works on a running domain; taking them away
        # needs the guest to let go of them, so that waits for a restart.
        within = want.get("max_vcpus", have.get("max_vcpus")) == have.get("max_vcpus")
        grows = (change.after or 0) > (change.before or 0)
        return ChangeClass.LIVE if within and grows and change.after <= (have.get("max_vcpus") or 0) else ChangeClass.RESTART
    if top == "cdroms" and path[-1] == "path":
        return ChangeClass.LIVE  # a media change in a drive that stays
    if top == "boot":
        return ChangeClass.NEXT_BOOT
    return ChangeClass.RESTART


def classified(changes: Iterable[Change], want: dict, have: dict) -> list[Change]:
    return [dataclasses.replace(c, klass=classify(c, want, have)) for c in changes]


def live_ops(changes: Iterable[Change]) -> tuple[LiveChange, ...]:
    """What the executor does to a running domain for its live-class changes."""
    ops: list[LiveChange] = []
    for c in changes:
        if c.klass is not ChangeClass.LIVE:
            continue
        if c.path == ("current_memory",):
            ops.append(SetMemory(c.after))
        elif c.path == ("vcpus",):
            ops.append(SetVcpus(c.after))
        elif c.path[0] == "cdroms" and c.path[-1] == "path":
            ops.append(ChangeMedia(c.path[1], c.after))
    return tuple(ops)
