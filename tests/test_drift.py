"""Drift, pending restarts, export and pruning on the real qemu:///system daemon.

Changes are made behind reconcile's back with `virsh` itself, as a person would; the plan
must name each one (field, before -> after, class of the correction, drift), exit 2 under
--detailed-exitcode, and apply must correct it.
"""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import libvirt
import pytest

from .conftest import DOMAIN_TYPE, REPO
from .test_roundtrip import isolated_network, make_iso

pytestmark = pytest.mark.libvirtd

PLAN_SCHEMA = json.loads((REPO / "schemas" / "plan.schema.json").read_text())


def virsh(*args: str) -> str:
    proc = subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def valid(doc: dict) -> dict:
    jsonschema.validate(doc, PLAN_SCHEMA)
    return doc


def test_drift_made_with_virsh_is_named_and_corrected(lab):
    net, net_spec = isolated_network(lab)
    iso = make_iso(lab, "drift")
    a, b = lab.dom("drifta"), lab.dom("driftb")
    lab.spec("drift.yaml", f"""
        networks:
        {net_spec}
        domains:
          - name: {a}
            type: {DOMAIN_TYPE}
            memory: 128MiB
            vcpus: 1
            boot: [hd, cdrom]
            disks: [{{pool: {lab.pool}, size: 16MiB}}]
            cdroms: [{{path: {iso}}}]
            interfaces: [{{network: {net}}}]
            autostart: false
            stop_timeout: 1
          - name: {b}
            type: {DOMAIN_TYPE}
            memory: 64MiB
            stop_timeout: 1
        """)
    lab.cli("apply", check=0)
    lab.cli("plan", "--detailed-exitcode", check=0)

    # 1. autostart switched on          (live)
    virsh("autostart", a)
    # 2. balloon at boot lowered         (live; `virsh setmem --config`)
    virsh("setmem", a, "100M", "--config")
    # 3. cdrom ejected in the running domain (live media change)
    virsh("change-media", a, "sda", "--eject", "--live")
    # 4. boot order edited in the config, as `virsh edit` does (next-boot)
    xml = virsh("dumpxml", a, "--inactive")
    edited = re.sub(r"<boot dev='hd'/>\s*<boot dev='cdrom'/>", "<boot dev='cdrom'/><boot dev='hd'/>", xml)
    assert edited != xml
    path = lab.specs.parent / "edited.xml"
    path.write_text(edited)
    virsh("define", str(path))
    # 5. interface removed from the config (restart)
    mac = re.search(r"<mac address='([0-9a-f:]+)'/>", xml).group(1)
    virsh("detach-interface", a, "network", "--mac", mac, "--config")
    # 6. the other domain powered off (live: start it)
    virsh("destroy", b)

    plan = lab.cli("plan", "--detailed-exitcode", check=2)
    out = plan.stdout
    drift = "(drift: changed outside reconcile)"
    assert f"autostart: true -> false  [live]  {drift}" in out, out
    assert f"current_memory: 100MiB -> 128MiB  [live]  {drift}" in out, out
    assert f"cdroms[sda].path: (none) -> {iso}  [live]  {drift}" in out, out
    assert f"boot: [cdrom, hd] -> [hd, cdrom]  [next-boot]  {drift}" in out, out
    assert re.search(rf"interfaces: \[\] -> \[\{{network: {net}, model: virtio\}}\]  \[restart\]  \(drift", out), out
    assert f"> start domain {b}" in out and f"state: stopped -> running  [live]  {drift}" in out, out
    assert "Drift: the host was changed outside reconcile." in out

    doc = valid(json.loads(lab.cli("plan", "--output", "json", check=0).stdout))
    assert doc["drift"] is True
    drifted = {c["path"]: c["class"] for x in doc["actions"] for c in x["changes"] if c["drift"]}
    assert drifted == {"autostart": "live", "current_memory": "live", "cdroms[sda].path": "live",
                       "boot": "next-boot", "interfaces": "restart", "state": "live"}, drifted

    applied = valid(json.loads(lab.cli("apply", "--output", "json", check=0).stdout))
    assert applied["ok"] and all(r["status"] == "applied" and r["duration"] >= 0 for r in applied["results"])
    dom = lab.conn.lookupByName(a)
    assert not dom.autostart()
    assert iso in dom.XMLDesc(0)  # the medium is back in the running domain
    assert f"<source network='{net}'" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)  # the interface is back
    assert lab.conn.lookupByName(b).isActive()
    after = lab.cli("plan", "--detailed-exitcode", check=0)
    assert "pending" not in after.stdout, after.stdout


def test_live_changes_reach_the_running_domain_without_restart(lab):
    name = lab.dom("live")
    iso1, iso2 = make_iso(lab, "live1"), make_iso(lab, "live2")
    spec = f"""
        domains:
          - name: {name}
            type: {DOMAIN_TYPE}
            memory: 128MiB
            current_memory: 96MiB
            vcpus: 1
            max_vcpus: 2
            cdroms: [{{path: {iso1}}}]
            autostart: false
            stop_timeout: 1
        """
    lab.spec("live.yaml", spec)
    lab.cli("apply", check=0)
    dom = lab.conn.lookupByName(name)
    qemu_id = dom.ID()
    lab.spec("live.yaml", spec.replace("96MiB", "128MiB").replace("vcpus: 1", "vcpus: 2").replace(iso1, iso2)
             .replace("autostart: false", "autostart: true"))
    plan = lab.cli("plan", "--detailed-exitcode", check=2)
    for line in ("autostart: false -> true  [live]", f"cdroms[sda].path: {iso1} -> {iso2}  [live]",
                 "current_memory: 96MiB -> 128MiB  [live]", "vcpus: 1 -> 2  [live]"):
        assert line in plan.stdout, plan.stdout
    assert "next restart" not in plan.stdout and "< stop" not in plan.stdout
    lab.cli("apply", check=0)
    dom = lab.conn.lookupByName(name)
    assert dom.ID() == qemu_id, "the domain was not restarted"
    assert dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 2
    assert iso2 in dom.XMLDesc(0) and dom.autostart()
    after = lab.cli("plan", "--detailed-exitcode", check=0)
    assert "pending" not in after.stdout, after.stdout


def test_deferred_change_is_pending_until_restart(lab):
    name = lab.dom("defer")
    spec = f"""
        domains:
          - name: {name}
            type: {DOMAIN_TYPE}
            memory: 64MiB
            stop_timeout: 1
        """
    lab.spec("defer.yaml", spec)
    lab.cli("apply", check=0)
    uuid = lab.conn.lookupByName(name).UUIDString()
    lab.spec("defer.yaml", spec.replace("64MiB", "96MiB"))

    plan = lab.cli("plan", check=0)
    assert "memory: 64MiB -> 96MiB  [restart]" in plan.stdout
    assert "take effect at its next restart (on_change: defer)" in plan.stdout
    lab.cli("apply", check=0)
    dom = lab.conn.lookupByName(name)
    assert dom.isActive() and dom.UUIDString() == uuid

    for _ in range(2):  # reported in every later plan, not only the next one
        pending = lab.cli("plan", "--detailed-exitcode", check=0)
        assert f"* pending domain {name}" in pending.stdout
        assert "memory: 64MiB -> 96MiB  [restart]" in pending.stdout
        assert "1 domain pending a restart." in pending.stdout
    doc = valid(json.loads(lab.cli("plan", "--output", "json", check=0).stdout))
    assert doc["pending"][0]["name"] == name and doc["pending"][0]["changes"][0]["path"] == "memory"

    restart = lab.cli("plan", "--restart", check=0)
    assert f"< stop domain {name}  (restart to apply memory (apply --restart))" in restart.stdout
    lab.cli("apply", "--restart", check=0)
    dom = lab.conn.lookupByName(name)
    assert dom.isActive() and dom.maxMemory() == 96 * 1024 and dom.UUIDString() == uuid
    done = lab.cli("plan", "--detailed-exitcode", check=0)
    assert "pending" not in done.stdout


SEED_701 = """
<domain type='qemu'>
  <name>{name}</name>
  <uuid></uuid>
  <memory>512000</memory>
  <currentMemory>512000</currentMemory>
  <vcpu>1</vcpu>
  <os>
    <type arch='i686' machine='pc'>hvm</type>
    <boot dev='cdrom'/>
    <boot dev='hd'/>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='cdrom'>
      <source file='/usr/src/ubuntu-10.04-desktop-i386.iso'/>
      <target dev='hdc'/>
      <readonly/>
    </disk>
    <disk type='file' device='disk'>
      <source file='{image}'/>
      <target dev='hda'/>
    </disk>
    <graphics type='vnc' port='5901' listen='127.0.0.1'/>
  </devices>
</domain>
"""


def test_export_of_hand_made_domain_plans_empty_then_adopts(lab):
    lab.cli("apply", check=0)  # the lab's pool
    name = lab.dom("701")
    image = Path(lab.pool_path) / f"{name}.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "16M"], check=True)
    lab.conn.storagePoolLookupByName(lab.pool).refresh(0)
    xml_file = lab.specs.parent / "701.xml"
    xml_file.write_text(SEED_701.format(name=name, image=image).replace("<uuid></uuid>", ""))
    virsh("define", str(xml_file))
    managed = lab.dom("managed")
    lab.spec("managed.yaml", f"""
        domains:
          - name: {managed}
            type: {DOMAIN_TYPE}
            memory: 64MiB
            machine: pc
            disks: [{{pool: {lab.pool}, size: 8MiB}}]
            graphics: {{type: vnc}}
            state: stopped
        """)
    lab.cli("apply", check=0)

    export = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "reconcile", "export", "--project", lab.name,
                             name, managed], capture_output=True, text=True, cwd=REPO,
                            env={"LIBVIRT_DEFAULT_URI": "qemu:///system", "PATH": "/usr/bin:/bin"})
    assert export.returncode == 0, export.stderr
    assert "arch: i686" in export.stdout and "size: 16MiB" in export.stdout and "port: 5901" in export.stdout
    (lab.specs / "managed.yaml").unlink()
    lab.spec("exported.yaml", export.stdout)

    plan = lab.cli("plan", "--detailed-exitcode", check=0)
    assert f"= domain {name}: unmanaged (exists)" in plan.stdout
    adopt = lab.cli("plan", "--adopt", "--detailed-exitcode", check=2)
    assert f"~ update domain {name}  (adopt: add reconcile's ownership record; 1 field differs)" in adopt.stdout
    assert f"owner: (none) -> {lab.name}  [live]" in adopt.stdout
    lab.cli("apply", "--adopt", check=0)
    lab.cli("plan", "--detailed-exitcode", check=0)
    assert "reconcile:owner" in lab.conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

    # Unexpressible: a disk outside every pool is an error that says what to do.
    stray = lab.dom("stray")
    lab.conn.defineXML(f"<domain type='qemu'><name>{stray}</name><memory unit='MiB'>64</memory>"
                       "<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>"
                       "<source file='/nonexistent/x.img'/><target dev='vda'/></disk></devices></domain>")
    bad = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "reconcile", "export", stray],
                         capture_output=True, text=True, cwd=REPO, env={"LIBVIRT_DEFAULT_URI": "qemu:///system"})
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "disk vda is /nonexistent/x.img, which is in no storage pool" in bad.stderr


def test_prune_removes_only_this_projects_orphans(lab):
    keep, gone = lab.dom("keep"), lab.dom("gone")
    for n in (keep, gone):
        lab.spec(f"{n}.yaml", f"""
            domains:
              - {{name: {n}, type: {DOMAIN_TYPE}, memory: 64MiB, state: stopped, disks: [{{pool: {lab.pool}, size: 8MiB}}]}}
            """)
    lab.cli("apply", check=0)
    other = lab.dom("other")  # managed by another project
    other_dir = lab.specs.parent / "other"
    other_dir.mkdir()
    (other_dir / "o.yaml").write_text(f"project: {lab.name}-x\ndomains:\n  - {{name: {other}, type: {DOMAIN_TYPE}, "
                                      "memory: 64MiB, state: stopped}\n")
    subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "reconcile", "apply", str(other_dir)], check=True,
                   capture_output=True, env={"LIBVIRT_DEFAULT_URI": "qemu:///system"}, cwd=REPO)
    byhand = lab.dom("byhand")
    lab.conn.defineXML(f"<domain type='qemu'><name>{byhand}</name><memory unit='MiB'>64</memory>"
                       "<os><type arch='x86_64'>hvm</type></os></domain>")

    (lab.specs / f"{gone}.yaml").unlink()
    plan = lab.cli("plan", check=0)
    assert f"= domain {gone}: orphaned" in plan.stdout
    pruned = lab.cli("plan", "--prune", "--output", "json", check=0)
    doc = valid(json.loads(pruned.stdout))
    assert [(x["action"], x["name"]) for x in doc["actions"]] == [
        ("destroy", f"{lab.pool}/{gone}-vda.qcow2"), ("destroy", gone)]
    lab.cli("apply", "--prune", check=0)
    assert lab.domain_names() == {keep, other, byhand}
    assert lab.volume_names() == {f"{keep}-vda.qcow2"}


def test_networks_are_created_with_ownership_and_nat_only_planned(lab):
    net, net_spec = isolated_network(lab)
    nat = f"{lab.name}-nat"
    lab.spec("net.yaml", f"""
        networks:
        {net_spec}
        """)
    lab.cli("apply", check=0)
    n = lab.conn.networkLookupByName(net)
    assert n.isActive() and n.autostart()
    xml = n.XMLDesc(0)
    assert f"project=\"{lab.name}\"" in xml or f"project='{lab.name}'" in xml
    assert "<forward" not in xml
    lab.cli("plan", "--detailed-exitcode", check=0)
    n.destroy()
    again = lab.cli("plan", "--detailed-exitcode", check=2)
    assert f"> start network {net}  (defined but not active)" in again.stdout
    lab.cli("apply", check=0)
    assert lab.conn.networkLookupByName(net).isActive()

    # A NAT network is only planned here: tests never start a forwarding network.
    lab.spec("nat.yaml", f"""
        networks:
          - {{name: {nat}, mode: nat, bridge: {lab.name[-8:]}nat, ip: 10.253.7.1, dhcp: {{start: 10.253.7.10, end: 10.253.7.20}}}}
        """)
    doc = valid(json.loads(lab.cli("plan", "--output", "json", check=0).stdout))
    create = next(x for x in doc["actions"] if x["name"] == nat)
    assert create["action"] == "create" and {"path": "mode", "before": None, "after": "nat", "class": None,
                                              "drift": False} in create["changes"]
    # Removing a network from the specs leaves it, noted as orphaned; --prune removes it,
    # since this project made it and no domain uses it.
    (lab.specs / "nat.yaml").unlink()
    (lab.specs / "net.yaml").unlink()
    plan = lab.cli("plan", check=0)
    assert f"= network {net}: orphaned: created by this project" in plan.stdout, plan.stdout
    assert lab.conn.networkLookupByName(net).isActive()
    pruned = lab.cli("apply", "--prune", check=0)
    assert f"- destroy network {net}: applied" in pruned.stdout, pruned.stdout
    assert net not in {n.name() for n in lab.conn.listAllNetworks(0)}


def test_an_exported_boot_order_naming_missing_devices_is_left_out_so_the_spec_validates(lab):
    name = lab.dom("bootless")
    lab.conn.defineXML(f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
                       "<os><type arch='x86_64'>hvm</type><boot dev='cdrom'/><boot dev='hd'/></os>"
                       "<devices></devices></domain>")
    export = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "reconcile", "export", "--project",
                             lab.name, name], capture_output=True, text=True, cwd=REPO,
                            env={"LIBVIRT_DEFAULT_URI": "qemu:///system", "PATH": "/usr/bin:/bin"})
    assert export.returncode == 0, export.stderr
    assert "boot:" not in export.stdout
    lab.spec("exported.yaml", export.stdout)
    valid = lab.cli("validate")
    assert valid.returncode == 0, valid.stdout + valid.stderr
    lab.cli("apply", "--adopt", check=0)
    lab.cli("plan", "--detailed-exitcode", check=0)
    os_el = ET.fromstring(lab.conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).find("os")
    assert [b.get("dev") for b in os_el.findall("boot")] == ["cdrom", "hd"]  # left as it was
