"""What a user reads when reconcile cannot reach libvirtd: what went wrong and what to do,
with no traceback. No daemon is needed: each case has a socket of its own."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from .conftest import REPO, write


@pytest.fixture
def spec_dir(tmp_path):
    write(tmp_path / "specs" / "a.yaml", """
        project: rctest-connect
        domains:
          - name: rctest-connect-a
            memory: 64MiB
        """)
    return tmp_path / "specs"


def plan(uri: str, spec_dir, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "reconcile", "plan", "-c", uri, str(spec_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_no_daemon_says_to_start_one(tmp_path, spec_dir):
    missing = tmp_path / "no-such.sock"
    done = plan(f"qemu+unix:///system?socket={missing}", spec_dir)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: connect to qemu+unix:///system?socket={missing}: ")
    assert "No such file or directory (libvirtd does not answer on this machine: start it" in done.stderr
    assert "scripts/" not in done.stderr  # an installed copy has no scripts
    assert "Traceback" not in done.stderr


def test_a_malformed_uri_is_called_so(spec_dir):
    for uri in ("garbage", "qemu:///nonsense"):
        done = plan(uri, spec_dir)
        assert done.returncode == 1
        assert "libvirt does not take this URI; expected one such as qemu:///system" in done.stderr, done.stderr
        assert "libvirtd" not in done.stderr.split("(")[-1]  # no word of starting a daemon
        assert "Traceback" not in done.stderr


def test_an_unreachable_remote_host_is_called_so(spec_dir):
    """Port 1 on loopback: nothing listens there, so the connection is refused at once."""
    for uri, extra in (("qemu+tcp://127.0.0.1:1/system", "libvirtd (listening for remote connections)"),
                       ("qemu+ssh://nobody@127.0.0.1:1/system", "sshd")):
        done = plan(uri, spec_dir)
        assert done.returncode == 1
        assert "nothing listens on 127.0.0.1 port 1: is" in done.stderr
        assert extra in done.stderr
        assert "start it" not in done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_a_socket_the_user_may_not_open_says_how_to_get_access(tmp_path, spec_dir):
    """As a user outside libvirtd's group would: root here, but without the capability that
    lets root open any file, against a socket with no permissions at all."""
    path = tmp_path / "denied.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    os.chmod(path, 0)
    try:
        caps = "-dac_override,-dac_read_search"
        done = plan(f"qemu+unix:///system?socket={path}", spec_dir,
                    ("setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"))
    finally:
        server.close()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Permission denied (run as root, or as a member of the group that owns libvirtd's socket" in done.stderr
    assert "polkit" in done.stderr
    assert "does not answer" not in done.stderr
    assert "Traceback" not in done.stderr
