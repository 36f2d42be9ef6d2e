"""The shapes that flow through reconcile: desired state, observed state, plans, results.

Specs load into `Desired` (`desired`); the live host is read into `Observed` (`observed`);
both describe a domain by the same "essence" (a plain dict of the fields a spec can
express), so that planning is a comparison of like with like. A `Plan` and its results are
in `plan`; sizes with units in `units`. Everything here is immutable data with no I/O.
May import: `errors` only; every other package imports this one.
"""

from .desired import (DEFAULT_STOP_TIMEOUT, Backing, Cdrom, Console, Desired, Disk, DomainSpec, Graphics, HostEntry, HostSpec, ImageSpec,
                      Interface, NetworkSpec, Origin, PoolSpec, Reference, Seed, State, protected_digest, seed_whole_digest,
                      short_digest, shown_source)
from .guest import (Address, AddressSource, Check, Condition, ConditionKind, Guest, Nic, Ready, Readiness,
                    one_line)
from .observed import (ImageHead, ImageRecord, SourceStamp, Observed, ObservedDomain, ObservedNetwork, ObservedPool, ObservedSeed,
                       ObservedVolume, Ownership, UnmodeledDevice, PoolOwner, Teardown, TeardownOutcome, VolumeRef)
from .plan import (Action, ActionKind, ActionResult, ApplyResult, Change, ChangeClass, Note, NoteKind, Pending, Plan,
                   ResourceKind, Status)

__all__ = [
    "DEFAULT_STOP_TIMEOUT", "Backing", "Cdrom", "Console", "Desired", "Disk", "DomainSpec", "Graphics", "HostEntry", "HostSpec", "ImageSpec",
    "Interface", "NetworkSpec", "Origin", "PoolSpec", "Reference", "Seed", "State", "protected_digest", "seed_whole_digest", "short_digest",
    "shown_source",
    "ImageHead", "ImageRecord", "SourceStamp", "Observed", "ObservedDomain", "ObservedNetwork", "ObservedPool", "ObservedSeed", "ObservedVolume",
    "Ownership", "UnmodeledDevice", "PoolOwner", "Teardown", "TeardownOutcome", "VolumeRef", "Action", "ActionKind", "ActionResult",
    "ApplyResult", "Change", "ChangeClass", "Note", "NoteKind", "Pending", "Plan", "ResourceKind", "Status", "Address",
    "AddressSource", "Check", "Condition", "ConditionKind", "Guest", "Nic", "Ready", "Readiness", "one_line",
]
