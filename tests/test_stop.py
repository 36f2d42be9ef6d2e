"""Graceful stop on the real daemon: ACPI first, power-off after stop_timeout, and a domain
that goes down on its own at the moment of the power-off is not an error.

The test domains boot no OS, so nothing answers the ACPI button: a stop that waits always
ends forced, which is exactly the timeout path.
"""

from __future__ import annotations

import json
import re
import time

import libvirt
import pytest

from reconcile.host import LibvirtHost

from .conftest import DOMAIN_TYPE, SYSTEM_URI

pytestmark = pytest.mark.libvirtd


def one_domain(lab, state: str = "running", stop_timeout: float = 2) -> str:
    name = lab.dom("stop")
    lab.spec("stop.yaml", f"""
        domains:
          - name: {name}
            type: {DOMAIN_TYPE}
            memory: 64MiB
            state: {state}
            stop_timeout: {stop_timeout}
        """)
    return name


def test_stop_times_out_then_forces(lab):
    name = one_domain(lab)
    lab.cli("apply", check=0)
    one_domain(lab, state="stopped")
    began = time.monotonic()
    out = lab.cli("apply", check=0)
    assert time.monotonic() - began >= 2  # it did wait for the guest first
    assert f"< stop domain {name}: applied (forced: still running 2s after the ACPI power-button press, so powered off)" \
        in out.stdout, out.stdout
    assert not lab.conn.lookupByName(name).isActive()


def test_quiet_prints_only_the_recap(lab):
    one_domain(lab, stop_timeout=0)
    out = lab.cli("apply", "-q", check=0)
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and re.fullmatch(r"Recap: 3 applied, 0 unchanged, 0 failed, 0 skipped in [\d.]+s", lines[0]), lines
    assert out.stderr == ""


def test_destroy_waits_for_acpi_unless_forced_and_says_so_in_json(lab):
    name = one_domain(lab, stop_timeout=1)
    lab.cli("apply", check=0)
    doc = json.loads(lab.cli("destroy", "-o", "json", check=0).stdout)
    stop = next(r for r in doc["results"] if r["id"] == f"domain:{name}:stop")
    assert stop["outcome"] == "forced" and stop["duration"] >= 1
    assert "ACPI" in stop["message"]

    lab.cli("apply", check=0)
    doc = json.loads(lab.cli("destroy", "--force", "-o", "json", check=0).stdout)
    stop = next(r for r in doc["results"] if r["id"] == f"domain:{name}:stop")
    assert stop["outcome"] == "forced" and stop["message"] == "forced: powered off at once (--force)"
    assert lab.domain_names() == set()


class _GoesDownAtTheForce:
    """A domain whose guest finishes shutting down just before our power-off lands."""

    def __init__(self, dom):
        self._dom = dom

    def __getattr__(self, name):
        return getattr(self._dom, name)

    def destroy(self):
        self._dom.destroy()  # the guest went down on its own...
        return self._dom.destroy()  # ...so libvirt refuses the power-off: "domain is not running"


def test_domain_off_at_the_moment_of_the_force_is_not_an_error(lab):
    name = one_domain(lab)
    lab.cli("apply", check=0)
    host = LibvirtHost(SYSTEM_URI)
    real = host._domain
    host._domain = lambda n: _GoesDownAtTheForce(real(n))
    try:
        with pytest.raises(libvirt.libvirtError):  # what libvirt itself says in that case
            _GoesDownAtTheForce(lab.conn.lookupByName(name)).destroy()
        lab.conn.lookupByName(name).create()
        assert host.stop_domain(name, timeout=0.5) == "graceful"
        assert not lab.conn.lookupByName(name).isActive()
        assert host.stop_domain(name, timeout=0.5) == "already stopped"
    finally:
        host.close()


def test_terminal_shows_what_runs_while_it_runs(lab):
    """On a terminal a status line names the running action and its time so far; in a
    pipe (every other test) only the finished lines appear."""
    import os
    import pty
    import subprocess
    import sys

    from .conftest import REPO

    name = one_domain(lab)
    lab.cli("apply", check=0)
    one_domain(lab, state="stopped")
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "reconcile", "apply", str(lab.specs)], cwd=REPO,
                            stdout=secondary, stderr=secondary, env=dict(os.environ, LIBVIRT_DEFAULT_URI=SYSTEM_URI))
    os.close(secondary)
    seen = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the other end closed: the command has ended
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(timeout=120)
    os.close(primary)
    text = seen.decode(errors="replace")
    assert proc.returncode == 0, text
    assert f"[0/1] running: stop {name} 1s" in text, text
    assert "\x1b[K" in text
    assert f"< stop domain {name}: applied (forced:" in text
