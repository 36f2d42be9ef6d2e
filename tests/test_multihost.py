"""Many hosts in one run, on three real daemons: qemu:///system and the session daemons of
two local users reached over qemu+ssh (see `remote_hosts`). One spec directory places a
domain on each; apply creates them in one run, grouped by host; a host that cannot be
reached fails alone; a moved domain goes only with --allow-recreate; destroy removes all.
And the ssh failures users meet, provoked for real, each say what to do."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time

import libvirt
import pytest

from .conftest import DOMAIN_TYPE, cleanup_uri, write

pytestmark = pytest.mark.libvirtd


def _domain(name: str, host: str | None, pool: str) -> str:
    where = f", host: {host}" if host else ""
    return (f"  - {{name: {name}{where}, type: {DOMAIN_TYPE}, memory: 64MiB, stop_timeout: 0, "
            f"disks: [{{pool: {pool}, size: 1MiB}}]}}\n")


def _names(uri: str, prefix: str) -> set[str]:
    conn = libvirt.open(uri)
    try:
        return {d.name() for d in conn.listAllDomains(0) if d.name().startswith(prefix)}
    finally:
        conn.close()


def _spec(lab, remote_hosts, uris: tuple[str, str], placement: dict[str, str | None]) -> None:
    """hosts s1 and s2 (the two sessions), a pool on each, and the domains where `placement` says."""
    homes = [remote_hosts.home(u) / f"{lab.name}-pool" for u in remote_hosts.users]
    lab.spec("hosts.yaml", f"hosts:\n  s1: \"{uris[0]}\"\n  s2: \"{uris[1]}\"\n"
             f"pools:\n  - {{name: {lab.name}-home, path: {homes[0]}, host: s1}}\n"
             f"  - {{name: {lab.name}-home, path: {homes[1]}, host: s2}}\n")
    lab.spec("domains.yaml", "domains:\n" + "".join(
        _domain(lab.dom(n), h, lab.pool if h is None else f"{lab.name}-home") for n, h in placement.items()))


def test_three_hosts_in_one_run(lab, remote_hosts):
    uris = remote_hosts.uris
    try:
        _spec(lab, remote_hosts, uris, {"sys": None, "one": "s1", "two": "s2"})
        first = lab.cli("apply", check=0)
        out = first.stdout
        assert "Traceback" not in out + first.stderr
        for host, name in (("s1", "one"), ("s2", "two")):
            assert f"on host {host} (" in out
            assert out.index(f"on host {host} (") < out.index(f"+ create domain {lab.dom(name)}")
        assert "on host default (qemu:///system)" in out
        assert "Recap: 12 applied" in out and "on 3 hosts" in out  # 3 pools, 3 domains with a disk, started
        assert _names("qemu:///system", lab.name) == {lab.dom("sys")}
        assert _names(uris[0], lab.name) == {lab.dom("one")}
        assert _names(uris[1], lab.name) == {lab.dom("two")}

        status = json.loads(lab.cli("status", "-o", "json", check=0).stdout)
        assert {(d["name"], d["host"], d["state"]) for d in status["domains"]} == {
            (lab.dom("sys"), "default", "running"), (lab.dom("one"), "s1", "running"),
            (lab.dom("two"), "s2", "running")}

        again = lab.cli("apply", "-o", "json", check=0)
        doc = json.loads(again.stdout)
        assert doc["actions"] == [] and doc["results"] == []
        assert [h["name"] for h in doc["hosts"]] == ["default", "s1", "s2"]

        # s2 cannot be reached (a key it does not accept): the other two finish, exit 1.
        stranger = lab.specs.parent / "stranger"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
        down = uris[1].replace(f"keyfile={remote_hosts.key}", f"keyfile={stranger}")
        _spec(lab, remote_hosts, (uris[0], down), {"sys": None, "one": "s1", "two": "s2", "sys2": None,
                                                  "one2": "s1", "two2": "s2"})
        started = time.monotonic()
        cut = lab.cli("apply")
        assert time.monotonic() - started < 120
        assert cut.returncode == 1, cut.stdout + cut.stderr
        assert "Traceback" not in cut.stdout + cut.stderr
        assert "Host s2 (" in cut.stdout and "could not be read" in cut.stdout
        assert "refused the login" in cut.stdout
        assert "error: host s2 (" in cut.stderr
        assert _names("qemu:///system", lab.name) == {lab.dom("sys"), lab.dom("sys2")}
        assert _names(uris[0], lab.name) == {lab.dom("one"), lab.dom("one2")}
        assert _names(uris[1], lab.name) == {lab.dom("two")}

        # back: the next apply converges, and a second one is a no-op
        _spec(lab, remote_hosts, uris, {"sys": None, "one": "s1", "two": "s2", "sys2": None, "one2": "s1",
                                        "two2": "s2"})
        lab.cli("apply", check=0)
        assert _names(uris[1], lab.name) == {lab.dom("two"), lab.dom("two2")}
        lab.cli("plan", "--detailed-exitcode", check=0)

        # one2 moves from s1 to s2: refused, then done with --allow-recreate
        _spec(lab, remote_hosts, uris, {"sys": None, "one": "s1", "two": "s2", "sys2": None, "one2": "s2",
                                        "two2": "s2"})
        refused = lab.cli("plan")
        assert refused.returncode == 1
        assert "its spec places it on this host, but it is on host s1" in refused.stdout
        moved = lab.cli("apply", "--allow-recreate", check=0)
        assert "its spec moved it to host s2" in moved.stdout
        assert _names(uris[0], lab.name) == {lab.dom("one")}
        assert _names(uris[1], lab.name) == {lab.dom("two"), lab.dom("two2"), lab.dom("one2")}
        lab.cli("plan", "--detailed-exitcode", check=0)

        gone = lab.cli("destroy", check=0)
        assert "Traceback" not in gone.stdout + gone.stderr
        for uri in ("qemu:///system", *uris):
            assert _names(uri, lab.name) == set()
    finally:
        for uri in uris:
            cleanup_uri(uri, prefix=lab.name)


def _reach(uri: str, tmp_path) -> subprocess.CompletedProcess:
    """`reconcile plan` of a spec with one domain on a host at `uri`, as a job with no terminal."""
    write(tmp_path / "specs" / "one.yaml", f"""
        hosts: {{far: "{uri}"}}
        domains: [{{name: rcerr-never, host: far, memory: 64MiB}}]
        """)
    started = time.monotonic()
    proc = subprocess.run([".venv/bin/python", "-m", "reconcile", "plan", str(tmp_path / "specs")],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          start_new_session=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    proc.elapsed = time.monotonic() - started  # type: ignore[attr-defined]
    return proc


def test_ssh_failures_say_what_to_do(remote_hosts, tmp_path):
    user = remote_hosts.users[0]
    base = remote_hosts.uris[0]
    # no wrapper: root's own ssh, whose known_hosts has never seen this sshd's key, and no
    # no_tty: reconcile must add batch mode itself, since this run has no terminal
    unknown = base.split("&command=")[0].replace("&no_tty=1", "")
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    changed_known = tmp_path / "known_changed"
    other = tmp_path / "otherhost"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    changed_known.write_text(f"[127.0.0.1]:{remote_hosts.port} {' '.join((other.with_suffix('.pub')).read_text().split()[:2])}\n")
    wrapper = tmp_path / "ssh-changed"
    wrapper.write_text(f"#!/bin/sh\nexec /usr/bin/ssh -o UserKnownHostsFile={changed_known} "
                       "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes \"$@\"\n")
    wrapper.chmod(0o700)
    changed = base.split("&command=")[0] + f"&command={wrapper}"
    cases = [
        (unknown, f"the host key of 127.0.0.1 is not known to this machine: check it and accept it once, with "
                  f"`ssh -p {remote_hosts.port} {user}@127.0.0.1`"),
        (changed, "the host key 127.0.0.1 sends is not the one recorded for it in known_hosts"),
        (base.replace(f"keyfile={remote_hosts.key}", f"keyfile={stranger}"),
         f"{user}@127.0.0.1 refused the login: put this machine's public key in that user's ~/.ssh/authorized_keys"),
        (base.replace(f":{remote_hosts.port}/", ":1/"), "nothing listens on 127.0.0.1 port 1: is sshd running there"),
        (base + "&proxy=netcat&netcat=/nonexistent/nc",
         "127.0.0.1 has neither virt-ssh-helper nor nc"),
    ]
    for uri, expected in cases:
        proc = _reach(uri, tmp_path)
        said = proc.stdout + proc.stderr
        assert proc.returncode == 1, said
        assert expected in said, said
        assert "Traceback" not in said
        assert "@@@@" not in said  # ssh's banner, folded into one line
        assert proc.elapsed < 30, f"{uri}: {proc.elapsed:.1f}s"


def test_a_daemon_that_does_not_run_is_called_so(remote_hosts, tmp_path):
    """rchost2's session daemon stopped, and unable to start again (its config does not
    parse): what a remote host whose libvirtd is down looks like through ssh."""
    user, uri = remote_hosts.users[1], remote_hosts.uris[1]
    conf = remote_hosts.home(user) / ".config" / "libvirt" / "libvirtd.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("this is not = a valid [ config\n")
    try:
        # This user exists for the tests only: every process it runs is the test's to end.
        pids = subprocess.run(["pgrep", "-u", user], capture_output=True, text=True).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # ended since pgrep listed it
                os.kill(int(pid), 15)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and subprocess.run(["pgrep", "-u", user], capture_output=True).returncode == 0:
            time.sleep(0.2)
        proc = _reach(uri, tmp_path)
        said = proc.stdout + proc.stderr
        assert proc.returncode == 1, said
        assert "libvirtd does not run on 127.0.0.1 (its socket is missing): start it there" in said, said
        assert "Traceback" not in said
    finally:
        conf.unlink()
    # and once it can start again, the same host answers
    assert _reach(uri, tmp_path).returncode == 0


def test_a_host_lost_mid_run_fails_alone(lab, remote_hosts):
    """rchost2's daemon (and its ssh session) killed while the apply works on it, one
    action at a time: its part fails, the other hosts' completes, and a re-run converges."""
    uris, user = remote_hosts.uris, remote_hosts.users[1]
    placement = {"sys": None, "one": "s1", **{f"two{i}": "s2" for i in range(8)}}
    try:
        _spec(lab, remote_hosts, uris, placement)
        proc = subprocess.Popen([".venv/bin/python", "-m", "reconcile", "apply", "--parallel", "1", str(lab.specs)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=os.path.dirname(os.path.dirname(__file__)),
                                env={**os.environ, "LIBVIRT_DEFAULT_URI": "qemu:///system"})
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[s2] + create domain"):
                # This user exists for the tests only: every process it runs is the test's to end.
                for pid in subprocess.run(["pgrep", "-u", user], capture_output=True, text=True).stdout.split():
                    with contextlib.suppress(ProcessLookupError):  # ended since pgrep listed it
                        os.kill(int(pid), 9)
                break
        out = "".join(lines) + proc.stdout.read()
        err = proc.stderr.read()
        assert proc.wait(timeout=300) == 1, out + err
        assert "Traceback" not in out + err
        assert f"error: host s2 ({uris[1]}): lost the connection to libvirtd" in err, err
        for host in ("default", "s1"):  # the others' work completed
            recap = next(line for line in out.splitlines() if line.startswith(f"Recap {host}: "))
            assert "0 failed, 0 skipped" in recap, out
        assert _names("qemu:///system", lab.name) == {lab.dom("sys")}
        assert _names(uris[0], lab.name) == {lab.dom("one")}
        lab.cli("apply", check=0)
        assert _names(uris[1], lab.name) == {lab.dom(f"two{i}") for i in range(8)}
        lab.cli("plan", "--detailed-exitcode", check=0)
    finally:
        for uri in uris:
            cleanup_uri(uri, prefix=lab.name)
