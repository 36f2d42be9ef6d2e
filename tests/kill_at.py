"""Run the command line and SIGKILL it at one chosen point of its work, as a crash would.

    python -m tests.kill_at K reconcile-arguments...

Every call of a primitive that changes the host is two points, its start and its end;
the process kills itself with SIGKILL on reaching point K (counted from 0, across all
worker threads, so other actions may be half-way through their own calls). Without K
reached, the command finishes normally. Used by tests/test_crash.py.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading

from reconcile import cli
from reconcile.host import LibvirtHost

PRIMITIVES = ("ensure_pool", "ensure_network", "define_domain", "apply_live", "create_volume", "grow_volume",
              "upload_volume", "write_volume", "start_domain", "stop_domain", "delete_volume", "undefine_domain",
              "set_owner", "write_in_place", "remove_pool", "remove_network")


def main() -> int:
    target = int(sys.argv[1])
    counter = [0]
    lock = threading.Lock()

    def point() -> None:
        with lock:
            here = counter[0]
            counter[0] += 1
        if here == target:
            os.kill(os.getpid(), signal.SIGKILL)

    for name in PRIMITIVES:
        original = getattr(LibvirtHost, name)

        @functools.wraps(original)
        def wrapper(self, *args, _original=original, **kwargs):
            point()
            out = _original(self, *args, **kwargs)
            point()
            return out

        setattr(LibvirtHost, name, wrapper)
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
