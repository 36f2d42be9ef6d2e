"""The hosts of a many-hosts run, each with its part of the specs and how it went, and the
way work is done on all of them at once."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
from typing import Any

from ..errors import ReconcileError
from ..model import ApplyResult, Desired, Observed, Plan
from ..plan import Options
from . import render


@dataclasses.dataclass
class Target:
    """One host of the run: its part of the specs, its connection, and how it went."""

    name: str | None  # None: the default connection
    uri: str
    desired: Desired
    host: Any  # LibvirtHost
    observed: Observed | None = None
    plan: Plan | None = None
    result: ApplyResult | None = None
    error: str = ""  # why it could not be read or changed: its part did not run
    readiness: tuple = ()  # with --wait: each started domain's verdict
    moves: Options = dataclasses.field(default_factory=Options)

    @property
    def label(self) -> str:
        return self.name or render.DEFAULT_HOST


def each(targets: list[Target], work, *args) -> None:
    """`work(target, *args)` for every target at once; an error of one host is kept as
    that host's, never raised past the others."""
    def guarded(t: Target) -> None:
        try:
            work(t, *args)
        except ReconcileError as exc:
            t.error = str(exc)

    live = [t for t in targets if not t.error]
    if len(live) == 1:
        guarded(live[0])
        return
    with cf.ThreadPoolExecutor(max_workers=max(1, len(live)), thread_name_prefix="reconcile-host") as pool:
        list(pool.map(guarded, live))
