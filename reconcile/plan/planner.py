"""`plan(desired, observed) -> Plan`: what must change for the host to match the specs.

Pure: no libvirt, no files, no clock. The same inputs give the same plan, in the same
order, which is what makes it reviewable and testable with plain data. Every decision not
to act is recorded as a `Note` with its reason, so "nothing to do" is explained too.

Order of work, and why:
- a domain is defined before its new volumes are created, so its ownership record (which
  lists the volumes reconcile creates for it) exists before the volumes do; a run killed in
  between leaves a managed domain with a missing volume, which the next run creates, never
  a volume nobody knows reconcile made;
- on removal, owned volumes are deleted before the domain is undefined, for the same
  reason in reverse;
- a cloud-init seed volume is one of the domain's owned volumes, recorded the same way;
- images are imported before the overlays built on them. An image belongs to no domain,
  since many domains (of any project) may be built on it: a plan never deletes one (only a
  rebuild's refresh deletes an earlier version, once nothing is built on it);
- the pools and networks the project made go last, after every domain and volume removal
  of the run, and only once nothing holds or uses them (`teardown`).
"""

from __future__ import annotations

import dataclasses

from ..model import Action, ActionKind, Desired, Observed, Plan, ResourceKind, State
from ..model.steps import ReplaceVolume
from .context import Context, Options, Planned, Waits, in_order, joined
from .domain import plan_domain
from .networks import plan_networks
from .removal import plan_prune
from .storage import plan_images, plan_pools
from .teardown import plan_teardown

# The order of work (see the module's docstring), by resource and verb; a disk's volume that
# its successor replaces goes after the domain's redefinition, before the new volume.
_PHASE = {
    (ResourceKind.POOL, ActionKind.CREATE): 0,
    (ResourceKind.POOL, ActionKind.START): 0,
    (ResourceKind.NETWORK, ActionKind.CREATE): 0,
    (ResourceKind.NETWORK, ActionKind.START): 0,
    (ResourceKind.NETWORK, ActionKind.UPDATE): 0,
    (ResourceKind.IMAGE, ActionKind.CREATE): 1,
    (ResourceKind.DOMAIN, ActionKind.STOP): 2,
    (ResourceKind.DOMAIN, ActionKind.RESET): 2,  # a rebuild cut short, finished: its mark comes first
    (ResourceKind.DOMAIN, ActionKind.CREATE): 3,
    (ResourceKind.DOMAIN, ActionKind.UPDATE): 3,
    (ResourceKind.VOLUME, ActionKind.CREATE): 5,
    (ResourceKind.VOLUME, ActionKind.UPDATE): 5,
    (ResourceKind.VOLUME, ActionKind.RESET): 5,
    (ResourceKind.DOMAIN, ActionKind.START): 6,
    (ResourceKind.VOLUME, ActionKind.DESTROY): 7,
    (ResourceKind.DOMAIN, ActionKind.DESTROY): 8,
    (ResourceKind.POOL, ActionKind.DESTROY): 9,
    (ResourceKind.NETWORK, ActionKind.DESTROY): 9,
}
_REPLACED = 4


def _order(action: Action) -> tuple:
    phase = _REPLACED if isinstance(action.payload, ReplaceVolume) else _PHASE[(action.resource, action.kind)]
    return (phase, action.name)


def plan(desired: Desired, observed: Observed, prune: bool = False, options: Options | None = None) -> Plan:
    options = options or Options(prune=prune)
    if options.destroying:  # the pools and networks are only the teardown's
        made: list[Planned] = []
        waits = Waits()
    else:
        pools, pool_waits = plan_pools(desired, observed)
        networks, net_waits = plan_networks(desired, observed)
        images, image_waits = plan_images(desired, observed, pool_waits)
        made, waits = [pools, networks, images], pool_waits | net_waits | image_waits
    ctx = Context(desired, observed, options, waits)
    found = joined([*made, *(plan_domain(spec, ctx) for spec in desired.domains),
                    plan_prune(desired, observed, options)])
    found = found + plan_teardown(desired, observed, options, found.actions)
    return Plan(project=desired.project, uri=observed.uri, actions=in_order(list(found.actions), _order),
                notes=tuple(sorted(found.notes, key=lambda n: (n.resource.value, n.name))),
                pending=tuple(sorted(found.pending, key=lambda p: p.name)))


def plan_destroy(desired: Desired, observed: Observed) -> Plan:
    """Remove every domain these specs manage (and the volumes reconcile created for it),
    then the pools and networks they declare that this project made, once nothing holds or
    uses them. Images stay, as always."""
    gone = dataclasses.replace(desired, domains=tuple(dataclasses.replace(d, state=State.ABSENT) for d in desired.domains),
                               images=())
    return plan(gone, observed, options=Options(destroying=True))
