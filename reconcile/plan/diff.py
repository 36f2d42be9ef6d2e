"""Field-level differences between a desired and an observed essence. Pure.

Only what the spec manages is compared: the observed essence is first projected onto the
desired one's shape, so a field libvirt fills in (and the spec leaves out) never differs.
Collections of devices (`disks`, `cdroms`) are keyed by target and compared as a whole set:
a device that is present on the host but not in the spec is a difference. Interfaces are
compared by position, each projected onto the keys the spec gives (a generated MAC is not a
difference). With the essence reconcile last applied, a change the spec did not ask for is
marked as drift.
"""

from __future__ import annotations

from typing import Any

from ..model import Change
from ..model.paths import lookup

COLLECTIONS = ("disks", "cdroms")
# Lists whose order is their meaning: a change anywhere is a change of the whole field.
ATOMIC = ("boot", "interfaces")
# Lists of devices compared by position, each projected onto the keys the spec gives.
RECORD_LISTS = ("interfaces",)


def project(desired: dict[str, Any], observed: dict[str, Any]) -> dict[str, Any]:
    """`observed` cut down to the keys `desired` manages."""
    out: dict[str, Any] = {}
    for key, want in desired.items():
        have = observed.get(key)
        if key in COLLECTIONS and isinstance(have, dict) and isinstance(want, dict):
            out[key] = {
                target: _record(want[target], dev) if target in want else dev
                for target, dev in have.items()
            }
        elif isinstance(want, dict) and want and isinstance(have, dict) and have:
            out[key] = _record(want, have)
        elif key in RECORD_LISTS and isinstance(want, list) and isinstance(have, list):
            # Per position, only the keys the spec gives: a MAC libvirt generated is not a difference.
            out[key] = [_record(want[i], dev) if i < len(want) and isinstance(want[i], dict) else dev
                        for i, dev in enumerate(have)]
        else:
            out[key] = have
    return out


def _record(want: dict[str, Any], have: Any) -> Any:
    if not isinstance(have, dict):
        return have
    return {field: have.get(field) for field in want}


def changes(desired: dict[str, Any], observed: dict[str, Any],
            applied: dict[str, Any] | None = None) -> tuple[Change, ...]:
    """The changes that turn `observed` into `desired`, sorted by path.

    `applied` is what reconcile last applied: where the spec still asks for that value, the
    host moved away from it on its own, and the change is marked as drift.
    """
    before = project(desired, observed)
    if before == desired:  # the usual case on a converged host, and far cheaper than DeepDiff
        return ()
    # Imported here: it is a third of the command's start-up time, and a converged host
    # never needs it.
    from deepdiff import DeepDiff

    diff = DeepDiff(before, desired, view="tree", verbose_level=2)
    found: dict[tuple, Change] = {}
    for levels in diff.values():
        for level in levels:
            path = level.path(output_format="list")
            top = path[0]
            if top in ATOMIC or (len(path) > 2 and top not in COLLECTIONS):
                path = path[:1]
            elif top in COLLECTIONS and len(path) > 3:
                path = path[:3]
            key = tuple(path)
            if key not in found:
                after = lookup(desired, path, None)
                drift = applied is not None and lookup(applied, path, None) == after
                found[key] = Change(key, lookup(before, path, None), after, drift=drift)
    return tuple(sorted(found.values(), key=lambda c: c.shown))
