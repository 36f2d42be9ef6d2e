"""End to end on the real qemu:///system daemon, through the command line a user runs.

These are the promises of the core path: the examples apply; a second apply changes
nothing although libvirt filled the XML with its own defaults; a domain stopped behind
reconcile's back shows as pending and is started again; a spec change is an update;
destroy removes the domains and the volumes reconcile created, and keeps the kept ones.
"""

from __future__ import annotations

import json
import re
import subprocess

import libvirt
import pytest
import yaml

from .conftest import DOMAIN_TYPE, REPO, run_cli

pytestmark = pytest.mark.libvirtd


def examples_as_test_lab(lab) -> None:
    """Copy specs/ into the lab, renamed with the test prefix and moved to the lab's pool."""
    base = lab.pool_path.parent / f"{lab.name}-base.qcow2"  # what scripts/up makes
    base.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1G"], check=True)
    for src in sorted((REPO / "specs").glob("*.yaml")):
        data = yaml.safe_load(src.read_text())
        data["project"] = lab.name
        data.pop("pools", None)
        for image in data.get("images", []):
            image["name"] = image["name"].replace("lab-", f"{lab.name}-", 1)
            image["pool"] = lab.pool
            image["source"] = str(base)
        for dom in data.get("domains", []):
            dom["name"] = dom["name"].replace("lab-", f"{lab.name}-", 1)
            dom["type"] = DOMAIN_TYPE
            dom["stop_timeout"] = 1
            for disk in dom.get("disks", []):
                disk["pool"] = lab.pool
                for key in ("name", "backing"):
                    if key in disk:
                        disk[key] = disk[key].replace("lab-", f"{lab.name}-", 1)
            for cdrom in dom.get("cdroms", []):
                cdrom["path"] = str(lab.pool_path.parent / f"{lab.name}.iso")
            if "graphics" in dom:
                dom["graphics"]["port"] = "auto"  # a fixed port would collide with a running example
        if data.get("domains") or data.get("images"):
            (lab.specs / src.name).write_text(yaml.safe_dump(data, sort_keys=False))
    iso = lab.pool_path.parent / f"{lab.name}.iso"
    iso.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["genisoimage", "-quiet", "-o", str(iso), str(REPO / "specs")], check=True)


def running(conn, name: str) -> bool:
    return bool(conn.lookupByName(name).isActive())


def test_examples_apply_then_converge(lab):
    examples_as_test_lab(lab)
    first = lab.cli("apply", check=0)
    assert "+ create domain" in first.stdout
    names = lab.domain_names()
    assert len(names) == 5, names
    assert all(running(lab.conn, n) for n in names)

    second = lab.cli("apply", check=0)
    assert "No changes." in second.stdout, second.stdout
    assert re.search(r"Recap: 0 applied, \d+ unchanged, 0 failed, 0 skipped", second.stdout), second.stdout
    lab.cli("plan", "--detailed-exitcode", check=0)

    # The 701 example: machine alias, ide disk and cdrom, VNC port, boot order all read back.
    xml = lab.conn.lookupByName(f"{lab.name}-701").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "machine='pc-i440fx-" in xml
    assert "<memory unit='KiB'>512000</memory>" in xml
    assert re.search(r"<boot dev='cdrom'/>\s*<boot dev='hd'/>", xml)

    # The cloud lab: an overlay larger than its base, a kept data disk, a cidata seed.
    overlay = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(lab.pool_path / f"{lab.name}-app01-vda.qcow2")],
                                        check=True, capture_output=True, text=True).stdout)
    assert overlay["backing-filename"] == str(lab.pool_path / f"{lab.name}-base.qcow2")
    assert overlay["virtual-size"] == 4 * 1024**3
    xml = lab.conn.lookupByName(f"{lab.name}-app01").XMLDesc(0)
    assert f"volume='{lab.name}-app01-data.qcow2'" in xml and f"volume='{lab.name}-app01-cidata.iso'" in xml


def test_stopped_behind_our_back_is_started_again(lab):
    name = lab.dom("web")
    lab.spec("web.yaml", f"""
        domains:
          - name: {name}
            type: {DOMAIN_TYPE}
            memory: 128MiB
            disks: [{{pool: {lab.pool}, size: 64MiB}}]
            stop_timeout: 1
        """)
    lab.cli("apply", check=0)
    lab.conn.lookupByName(name).destroy()  # as `virsh destroy` would

    plan = lab.cli("plan", "--detailed-exitcode", check=2)
    assert f"> start domain {name}" in plan.stdout
    assert "state: stopped -> running" in plan.stdout
    applied = lab.cli("apply", check=0)
    assert "1 applied" in applied.stdout, applied.stdout
    assert running(lab.conn, name)
    lab.cli("plan", "--detailed-exitcode", check=0)


def test_memory_change_is_an_update(lab):
    name = lab.dom("mem")
    spec = f"""
        domains:
          - name: {name}
            type: {DOMAIN_TYPE}
            memory: 128MiB
            state: stopped
        """
    lab.spec("mem.yaml", spec)
    lab.cli("apply", check=0)
    uuid = lab.conn.lookupByName(name).UUIDString()
    lab.spec("mem.yaml", spec.replace("128MiB", "256MiB"))

    plan = lab.cli("plan", "--detailed-exitcode", check=2)
    assert f"~ update domain {name}" in plan.stdout
    assert "memory: 128MiB -> 256MiB" in plan.stdout
    lab.cli("apply", check=0)
    dom = lab.conn.lookupByName(name)
    assert dom.UUIDString() == uuid
    assert dom.maxMemory() == 256 * 1024
    lab.cli("plan", "--detailed-exitcode", check=0)


def test_destroy_removes_domains_and_owned_volumes_but_keeps_kept(lab):
    keeper = lab.dom("db")
    lab.spec("db.yaml", f"""
        domains:
          - name: {keeper}
            type: {DOMAIN_TYPE}
            memory: 128MiB
            stop_timeout: 0
            disks:
              - {{pool: {lab.pool}, size: 64MiB}}
              - {{pool: {lab.pool}, size: 32MiB, format: raw, keep: true}}
        """)
    lab.cli("apply", check=0)
    assert lab.volume_names() == {f"{keeper}-vda.qcow2", f"{keeper}-vdb.img"}

    out = lab.cli("destroy", check=0)
    assert f"- destroy domain {keeper}" in out.stdout
    assert lab.domain_names() == set()
    assert lab.volume_names() == {f"{keeper}-vdb.img"}
    # The pool reconcile made for the lab stays while the kept disk is in it.
    assert f"= pool {lab.pool}: kept: it still holds volume {keeper}-vdb.img" in out.stdout, out.stdout
    # Nothing left to destroy: a second run is a no-op.
    again = lab.cli("destroy", check=0)
    assert "No changes." in again.stdout


def test_unmanaged_domain_is_reported_then_adopted(lab):
    name = lab.dom("byhand")
    lab.conn.defineXML(f"<domain type='{DOMAIN_TYPE}'><name>{name}</name><memory unit='MiB'>64</memory>"
                       "<os><type arch='x86_64'>hvm</type></os></domain>")
    uuid = lab.conn.lookupByName(name).UUIDString()
    lab.spec("byhand.yaml", f"""
        domains:
          - name: {name}
            type: {DOMAIN_TYPE}
            memory: 128MiB
            state: stopped
        """)
    applied = lab.cli("apply", check=0)
    assert f"= domain {name}: unmanaged (exists)" in applied.stdout
    plan = lab.cli("plan", "--detailed-exitcode", check=0)
    assert f"= domain {name}: unmanaged (exists)" in plan.stdout
    assert lab.conn.lookupByName(name).maxMemory() == 64 * 1024  # left alone without --adopt

    adopt = lab.cli("plan", "--adopt", "--detailed-exitcode", check=2)
    assert f"~ update domain {name}  (adopt: add reconcile's ownership record" in adopt.stdout
    assert "memory: 64MiB -> 128MiB  [restart]" in adopt.stdout
    lab.cli("apply", "--adopt", check=0)
    dom = lab.conn.lookupByName(name)
    assert dom.maxMemory() == 128 * 1024 and not dom.isActive()
    assert dom.UUIDString() == uuid
    assert "reconcile:owner" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    lab.cli("plan", "--detailed-exitcode", check=0)


def test_libvirt_refusal_is_a_message_not_a_traceback(lab):
    name = lab.dom("noiso")
    lab.spec("noiso.yaml", f"""
        domains:
          - name: {name}
            type: {DOMAIN_TYPE}
            memory: 128MiB
            cdroms: [{{path: /nonexistent/{name}.iso}}]
        """)
    out = lab.cli("apply")
    assert out.returncode == 1
    assert "Traceback" not in out.stdout + out.stderr
    assert re.search(rf"> start domain {name}: failed \(start domain {name}: .*{name}\.iso", out.stdout), out.stdout
    assert "1 failed" in out.stdout
    # what did apply is recorded: the domain is defined and managed, so a fixed spec converges
    assert name in lab.domain_names()


def test_bad_spec_names_file_and_resource_and_touches_nothing(lab, tmp_path):
    bad = lab.spec("bad.yaml", f"""
        domains:
          - name: {lab.dom('bad')}
            memory: 512
            vcpus: 0
        """)
    for command in ("validate", "plan", "apply"):
        out = lab.cli(command)
        assert out.returncode == 1, out
        assert "Traceback" not in out.stderr
        assert f"{bad}:3:13: resource '{lab.dom('bad')}': memory:" in out.stderr, out.stderr
        assert f"{bad}:4:12: resource '{lab.dom('bad')}': vcpus:" in out.stderr, out.stderr
        assert "nothing was changed on the host" in out.stderr
    assert lab.domain_names() == set()


def test_unreachable_host_is_a_clear_error():
    out = run_cli("plan", str(REPO / "specs"), uri="qemu+unix:///system?socket=/nonexistent/sock")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "error: connect to qemu+unix:///system?socket=/nonexistent/sock:" in out.stderr
