"""Two runs against one host and project never both act (the lock lives in libvirtd).

On the real daemon: a second apply started while the first works waits for it, then finds
nothing to do; a held lock makes a run with work to do fail after --lock-timeout, naming the
holder, while a run with nothing to do does not wait for it; a lock
whose holder is gone (dead pid here, or a stale heartbeat from another machine) is taken
over; a live one from elsewhere is only removed with --break-lock.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from reconcile.host import LibvirtHost
from reconcile.apply.lock import lock_name

from .conftest import DOMAIN_TYPE, REPO, SYSTEM_URI

pytestmark = pytest.mark.libvirtd


def stamp(seconds_ago: float = 0) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds_ago)).isoformat(timespec="seconds")


def small_lab(lab, count: int = 3) -> list[str]:
    names = [lab.dom(f"l{i}") for i in range(count)]
    lab.spec("lock.yaml", "domains:\n" + "".join(
        f"  - {{name: {n}, type: {DOMAIN_TYPE}, memory: 64MiB, stop_timeout: 0,"
        f" disks: [{{pool: {lab.pool}, size: 16MiB}}]}}\n" for n in names))
    return names


def test_two_applies_at_once_do_not_both_act(lab):
    names = small_lab(lab, 4)
    host = LibvirtHost(SYSTEM_URI)
    env = dict(os.environ, LIBVIRT_DEFAULT_URI=SYSTEM_URI)
    cmd = [sys.executable, "-m", "reconcile", "apply", "-o", "json", "--parallel", "1", str(lab.specs)]
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while host.read_lock(lock_name(lab.name)) is None:  # the first run holds the lock
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.02)
        second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        out1, err1 = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
        host.close()
    assert first.returncode == 0, err1
    assert second.returncode == 0, second.stderr
    one, two = json.loads(out1), json.loads(second.stdout)
    # Only the first acted. The second either saw work left, waited for the lock and planned
    # again after the first, or (had the first finished its actions) found nothing to do.
    assert one["recap"]["applied"] == len(one["actions"]) > 0
    assert two["actions"] == [] and two["recap"]["applied"] == 0
    if "waiting up to 60s for the lock" in second.stderr:
        assert f"held by pid {first.pid} on host {socket.gethostname()}" in second.stderr, second.stderr
    assert lab.domain_names() == set(names)


def test_held_lock_fails_after_timeout_naming_the_holder(lab):
    small_lab(lab, 1)
    host = LibvirtHost(SYSTEM_URI)
    holder = {"host": "ci-runner-7", "pid": "4242", "since": stamp(5), "heartbeat": stamp(1), "command": "reconcile apply"}
    token, _ = host.take_lock(lock_name(lab.name), holder)
    try:
        assert token
        began = time.monotonic()
        out = lab.cli("apply", "--lock-timeout", "2")
        assert out.returncode == 1
        assert time.monotonic() - began >= 2
        assert "Traceback" not in out.stderr
        assert f"held by pid 4242 on host ci-runner-7 since {holder['since']}" in out.stderr, out.stderr
        assert "--break-lock" in out.stderr
        assert lab.domain_names() == set()
        # plan does not need the lock
        lab.cli("plan", check=0)
        # A person who knows that run is dead breaks the lock.
        broke = lab.cli("apply", "--break-lock", check=0)
        assert "breaking the lock" in broke.stderr
        assert len(lab.domain_names()) == 1
        assert host.read_lock(lock_name(lab.name)) is None  # released at the end
        # With nothing to do, apply neither waits for a held lock nor touches it.
        token, _ = host.take_lock(lock_name(lab.name), holder)
        began = time.monotonic()
        idle = lab.cli("apply", "--lock-timeout", "30", check=0)
        assert time.monotonic() - began < 15
        assert "waiting" not in idle.stderr and "No changes" in idle.stdout, idle.stdout + idle.stderr
        assert host.read_lock(lock_name(lab.name))["pid"] == "4242"
    finally:
        host.drop_lock(lock_name(lab.name), token)
        host.close()


@pytest.mark.parametrize("holder", [
    pytest.param({"host": socket.gethostname(), "pid": "999999", "since": stamp(5), "heartbeat": stamp(1)}, id="dead-pid-here"),
    pytest.param({"host": "elsewhere", "pid": "12", "since": stamp(3600), "heartbeat": stamp(600)}, id="silent-elsewhere"),
])
def test_stale_lock_is_taken_over(lab, holder):
    small_lab(lab, 1)
    host = LibvirtHost(SYSTEM_URI)
    try:
        token, _ = host.take_lock(lock_name(lab.name), dict(holder, command="reconcile apply"))
        assert token
        out = lab.cli("apply", "--lock-timeout", "0", check=0)
        # removed as the run starts (every plan and apply clears a stale lock of its project)
        assert f"removed the stale lock {lock_name(lab.name)}" in out.stderr, out.stderr
        assert len(lab.domain_names()) == 1
        assert host.read_lock(lock_name(lab.name)) is None
    finally:
        host.close()
