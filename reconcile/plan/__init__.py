"""Planning: `plan(desired, observed) -> Plan`, what must change for the host to match the
specs. Pure: no libvirt, no files, no clock; the same inputs give the same plan.

`planner` (the whole plan and the order of its work), `context` (what each step is given
and returns), `storage` (pools and images), `networks`, `domain` (one domain, in steps),
`disks` (a domain's disks and seed), `classes` (how a change reaches a running domain),
`removal` (absent domains, destroy, prune), `teardown` (the pools and networks the project
made, removed last once nothing holds them), `rebuild` (domains back to their first boot),
`record` (the ownership record and the definition that writes it), `diff` (field-level
differences of two essences). May import: `codec`, `model`, `errors`.
"""

from .context import Options
from .planner import plan, plan_destroy
from .rebuild import plan_rebuild

__all__ = ["Options", "plan", "plan_destroy", "plan_rebuild"]
