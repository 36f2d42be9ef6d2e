"""The libvirt host: the only package that imports libvirt.

It reads the host into `Observed` with as few calls as it can (a handful of listings, one
XML read per domain and per volume of interest) and offers one method per primitive the
executor needs. Each primitive re-checks its precondition and returns False when there was
nothing to do, so a re-run after a crash converges instead of failing. Every libvirtError is
translated here into one of reconcile's `HostError` kinds, with the original as the cause.

`connection` (opening it, rounds of reads, streams), `errors` (libvirt's errors as ours),
`observe` (the read rounds), and the primitives by resource: `domains`, `pools`, `storage`
(volumes), `networks`, `locks` (the run lock's storage), `guests` (addresses, consoles,
the agent). May import: `codec`, `model`, `errors`.
"""

from __future__ import annotations

from .domains import Domains
from .errors import translate, wrapped
from .guests import Guests
from .locks import Locks
from .networks import Networks
from .observe import Observing
from .storage import Storage

__all__ = ["LibvirtHost", "translate", "wrapped"]


class LibvirtHost(Observing, Domains, Storage, Networks, Locks, Guests):
    """One connection to one libvirt URI, with every primitive. Safe to share between
    executor threads."""
