"""The command line at its edges: exit codes a pipeline can trust, JSON on every outcome,
special files among the specs, odd values of options, and a stale lock cleaned up.

Most need no daemon; those that do are marked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import jsonschema
import pytest

from .conftest import REPO, write

ERROR_SCHEMA = json.loads((REPO / "schemas" / "error.schema.json").read_text())
DOWN = "qemu+tcp://127.0.0.1:1/system"  # nothing listens there: refused at once


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconcile", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, **kwargs)


@pytest.fixture
def spec_dir(tmp_path):
    write(tmp_path / "specs" / "a.yaml", """
        project: rctest-edges
        domains:
          - {name: rctest-edges-a, memory: 64MiB}
        """)
    return tmp_path / "specs"


@pytest.mark.parametrize("args", [
    ("plan", "--detailed-exitcode", "--parallel", "3"),
    ("plan", "-o", "yaml"),
    ("apply", "--out", "F"),  # once read as --output F (plan has --out; apply does not)
    ("apply", "--parallel", "abc"),
    ("apply", "--parallel", "0"),
    ("apply", "--lock-timeout", "-5"),
    ("apply", "--lock-timeout", "nan"),
    ("apply", "--lock-timeout", "inf"),
], ids=lambda a: " ".join(a))
def test_a_usage_error_exits_1_with_the_commands_own_usage(args, spec_dir):
    done = cli(*args, str(spec_dir))
    assert done.returncode == 1, done.stderr  # 2 would read as "changes pending"
    assert done.stderr.startswith(f"usage: reconcile {args[0]} "), done.stderr
    assert "invalid _positive value" not in done.stderr and "Traceback" not in done.stderr
    if "abc" in args:
        assert "'abc' is not a whole number" in done.stderr


def test_version():
    done = cli("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("reconcile ") and done.stdout.split()[1][0].isdigit()


@pytest.mark.parametrize("command", ["plan", "apply", "destroy", "rebuild", "status", "wait", "inventory", "ssh-config"])
def test_json_on_an_unreachable_host_is_one_document(command, spec_dir):
    done = cli(command, "-o", "json", "-c", DOWN, str(spec_dir))
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    jsonschema.validate(doc, ERROR_SCHEMA)
    assert (doc["command"], doc["error"]["kind"]) == (command, "host unavailable")
    assert "nothing listens on 127.0.0.1 port 1" in doc["error"]["message"]


def test_rebuild_names_what_it_cannot_find(spec_dir):
    unknown = cli("rebuild", "-c", "test:///default", str(spec_dir), "rctest-edges-b")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert "'rctest-edges-b' is neither a spec path nor a domain the specs name; did you mean 'rctest-edges-a'?" \
        in unknown.stderr
    nothing = cli("rebuild", "-c", "test:///default", "no-such-dir")
    assert nothing.returncode == 1 and "none of no-such-dir is a spec file or directory" in nothing.stderr
    # The specs in a directory named like their domain: `rebuild DIR` must not take the
    # domain's name for the path and rebuild everything.
    here = spec_dir.parent / "clash"
    (here / "rctest-edges-a").mkdir(parents=True)
    (here / "rctest-edges-a" / "a.yaml").write_text((spec_dir / "a.yaml").read_text())
    clash = subprocess.run([sys.executable, "-m", "reconcile", "rebuild", "-c", "test:///default", "rctest-edges-a"],
                           cwd=here, capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert clash.returncode == 1 and "'rctest-edges-a' is both a file or directory here and a domain" in clash.stderr
    absent = cli("rebuild", "-c", "test:///default", str(spec_dir), "rctest-edges-a")
    assert absent.returncode == 1
    assert "! refuse domain rctest-edges-a: not on the host: `reconcile apply` creates it" in absent.stdout


def test_json_on_a_usage_error_is_one_document(spec_dir):
    done = cli("plan", "-o", "json", "--bogus", str(spec_dir))
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    jsonschema.validate(doc, ERROR_SCHEMA)
    assert doc["error"] == {"kind": "usage", "message": "unrecognized arguments: --bogus"}


def test_schema_and_export_take_output():
    done = cli("schema", "-o", "json")
    assert done.returncode == 0 and json.loads(done.stdout)["title"]
    assert cli("export", "-o", "json", "-c", DOWN, "x").returncode == 1


def test_a_fifo_among_the_specs_is_refused_not_waited_for(spec_dir):
    os.mkfifo(spec_dir / "pipe.yaml")
    done = cli("validate", str(spec_dir))  # the timeout fails the test if it hangs
    assert done.returncode == 1
    assert f"{spec_dir / 'pipe.yaml'}: not a regular file" in done.stderr, done.stderr


def test_a_device_is_refused_and_a_pipe_given_by_name_is_read(spec_dir):
    done = cli("validate", "/dev/zero")
    assert done.returncode == 1
    assert "/dev/zero: not a regular file" in done.stderr
    read, write_end = os.pipe()
    os.write(write_end, (spec_dir / "a.yaml").read_bytes())
    os.close(write_end)
    try:
        piped = cli("validate", f"/dev/fd/{read}", pass_fds=(read,))
    finally:
        os.close(read)
    assert piped.returncode == 0, piped.stderr
    assert "1 file valid: 1 domains" in piped.stdout


def test_a_file_name_that_is_not_utf8_is_shown_escaped(tmp_path):
    specs = os.fsencode(tmp_path / "specs")
    os.makedirs(specs)
    with open(specs + b"/bad\xff.yaml", "wb") as f:
        f.write(b"domains: [{name: x}]\n")  # no memory: a problem located in that file
    done = subprocess.run([sys.executable, "-m", "reconcile", "validate", "-o", "json", specs], cwd=REPO,
                          capture_output=True, timeout=60)
    assert done.returncode == 1
    doc = json.loads(done.stdout.decode("utf-8"))  # strict UTF-8: no lone surrogate got through
    assert doc["diagnostics"][0]["file"].endswith("bad\\xff.yaml")
    text = subprocess.run([sys.executable, "-m", "reconcile", "validate", specs], cwd=REPO, capture_output=True,
                          timeout=60)
    assert b"bad\\xff.yaml" in text.stderr and b"Traceback" not in text.stderr


def test_a_large_file_of_plain_values_is_no_alias_bomb(tmp_path):
    """44,000 plain values in 9 MiB, as a big user-data can be: only what aliases add counts."""
    files = "".join(f"        - {{path: /etc/lab/{i:05d}, content: {'x' * 760}}}\n" for i in range(11_000))
    spec = tmp_path / "big.yaml"
    spec.write_text("domains:\n  - name: big\n    memory: 64MiB\n    cloud_init:\n      user_data:\n"
                    "        write_files:\n" + files.replace("        - ", "          - "))
    assert 8 * 1024 * 1024 < spec.stat().st_size < 10 * 1024 * 1024
    done = cli("validate", str(spec))
    assert done.returncode == 0, done.stderr[-2000:]


def test_two_networks_of_one_subnet_or_bridge_are_caught_in_validate(tmp_path):
    spec = write(tmp_path / "n.yaml", """
        networks:
          - {name: n1, ip: 192.168.240.1, bridge: rcbr0}
          - {name: n2, ip: 192.168.240.7}
          - {name: n3, ip: 192.168.241.1, bridge: rcbr0}
        """)
    done = cli("validate", str(spec))
    assert done.returncode == 1
    assert "n.yaml:3:20: resource 'n2': ip: subnet 192.168.240.0/24 overlaps 192.168.240.0/24 of network 'n1'" \
        in done.stderr, done.stderr
    assert "resource 'n3': bridge: bridge 'rcbr0' is also the bridge of network 'n1'" in done.stderr


@pytest.mark.libvirtd
def test_clashes_with_the_host_are_refused_at_plan(lab, system_conn):
    """A new pool over another pool's directory, a network whose subnet or bridge another
    network has (defined, never started: no traffic), and a pool that exists elsewhere,
    which every plan shows, not only -v."""
    lab.cli("apply", check=0)
    net = ET.fromstring("<network><name/><bridge stp='on' delay='0'/><ip address='192.168.239.1' "
                        "netmask='255.255.255.0'/></network>")
    net.find("name").text = f"{lab.name}-taken"
    net.find("bridge").set("name", "rctbr-taken")
    system_conn.networkDefineXML(ET.tostring(net, encoding="unicode"))
    lab.spec("clash.yaml", f"""
        pools:
          - {{name: {lab.name}-twin, path: {lab.pool_path}}}
        networks:
          - {{name: {lab.name}-n1, ip: 192.168.239.9}}
          - {{name: {lab.name}-n2, bridge: rctbr-taken, ip: 192.168.238.1}}
        """)
    (lab.specs / "pool.yaml").write_text((lab.specs / "pool.yaml").read_text().replace(str(lab.pool_path),
                                                                                          f"{lab.pool_path}-moved"))
    done = lab.cli("plan")
    assert done.returncode == 1, done.stdout + done.stderr
    assert (f"! refuse pool {lab.name}-twin: its path {lab.pool_path} is already the directory of pool {lab.pool}"
            in done.stdout), done.stdout
    assert (f"! refuse network {lab.name}-n1: its subnet 192.168.239.0/24 overlaps 192.168.239.0/24 of network "
            f"{lab.name}-taken") in done.stdout
    assert f"! refuse network {lab.name}-n2: its bridge rctbr-taken is already the bridge of network" in done.stdout
    assert f"= pool {lab.pool}: exists at {lab.pool_path}, not {lab.pool_path}-moved" in done.stdout


@pytest.mark.libvirtd
def test_a_stale_lock_is_reported_and_removed_by_the_next_plan(lab, system_conn):
    """As a run killed with SIGKILL leaves it: its pid is gone on this very host."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = {"host": os.uname().nodename, "pid": str(dead.pid), "since": "2026-01-01T00:00:00+00:00",
              "heartbeat": "2026-01-01T00:00:00+00:00", "command": "reconcile apply"}
    root = ET.Element("network")
    ET.SubElement(root, "name").text = f"{lab.name}.reconcile-lock"
    ET.SubElement(ET.SubElement(root, "metadata"), "{http://reconcile.dev/xmlns/lock/1}lock", holder)
    system_conn.networkDefineXML(ET.tostring(root, encoding="unicode"))
    done = lab.cli("plan")
    assert f"removed the stale lock {lab.name}.reconcile-lock: held by pid {dead.pid}" in done.stderr, done.stderr
    assert f"{lab.name}.reconcile-lock" not in {n.name() for n in system_conn.listAllNetworks(0)}
