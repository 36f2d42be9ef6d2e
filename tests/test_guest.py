"""A real guest on the real daemon, as a lab uses one: a base image imported through the
spec, an overlay root disk, a cloud-init seed, a kept data disk, a graceful stop and a
forced one, and a nightly rebuild.

The guest is built by tests/guest/build from Debian packages and cached (see docs/development.md,
Development). Guests that boot use domain type `qemu`: with `kvm`, syslinux hits an
emulation failure on nested hosts. Everything the guest does is read from the console log
that the spec's `console: {log: ...}` asks for; its init prints lines starting with
`rcguest:`. Both guests boot at once, so the scenario costs about one boot per step.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid as uuid_mod
import xml.etree.ElementTree as ET

import libvirt
import pytest

from .conftest import wait_for_console

pytestmark = pytest.mark.libvirtd

BOOT_TYPE = "qemu"


def lab_spec(lab, images, greeting: str, state: str = "running") -> str:
    """Two guests on overlays of the two imported images (`vm`'s a qcow2 one, `deaf`'s raw);
    `vm` has a seed and a kept data disk."""
    pool = lab.pool
    return f"""
        networks:
          - {{name: {lab.name}-net, ip: 192.168.247.1, netmask: 255.255.255.0}}
        images:
          - {{name: {lab.name}-base.qcow2, pool: {pool}, source: {images['acpi-qcow2']}, format: qcow2}}
          - {{name: {lab.name}-deaf-base.img, pool: {pool}, source: {images['acpi-ignore']}, format: raw}}
        domains:
          - name: {lab.dom('vm')}
            type: {BOOT_TYPE}
            memory: 128MiB
            disks:
              - {{pool: {pool}, backing: {lab.name}-base.qcow2, size: 64MiB}}
              - {{pool: {pool}, name: {lab.name}-data.img, format: raw, size: 16MiB, keep: true}}
            cloud_init:
              user_data:
                runcmd:
                  - [echo, {greeting}]
                password: {{env: RCTEST_LAB_PASS}}
            console: {{log: {lab.console_log('vm')}}}
            interfaces: [{{network: {lab.name}-net}}]
            state: {state}
            stop_timeout: 120
          - name: {lab.dom('deaf')}
            type: {BOOT_TYPE}
            memory: 128MiB
            disks:
              - {{pool: {pool}, backing: {lab.name}-deaf-base.img}}
            console: {{log: {lab.console_log('deaf')}}}
            state: {state}
            stop_timeout: 10
        """


def marker(log: str, key: str) -> str:
    """The value of the last `rcguest: KEY: VALUE` line."""
    found = re.findall(rf"^rcguest: {re.escape(key)}: (.*)$", log, re.M)
    assert found, f"no 'rcguest: {key}:' line in the console log:\n{log}"
    return found[-1].strip()


def stop_results(proc) -> dict[str, dict]:
    doc = json.loads(proc.stdout)
    actions = {a["id"]: a for a in doc["actions"]}
    return {actions[r["id"]]["name"]: r for r in doc["results"] if actions[r["id"]]["action"] == "stop"}


def test_lab_guest_boots_reads_its_seed_stops_and_survives_a_rebuild(lab, guest_images, tmp_path, monkeypatch):
    vm_log, deaf_log = lab.console_log("vm"), lab.console_log("deaf")
    # The seed's password comes from the environment: the guest prints it (it prints its
    # user-data); no output of any command, no plan file and no metadata may hold it.
    secret = f"pw-{uuid_mod.uuid4().hex}"
    monkeypatch.setenv("RCTEST_LAB_PASS", secret)
    said: list[str] = []
    cli = lab.cli

    def recorded(*args, **kwargs):
        proc = cli(*args, **kwargs)
        said.append(proc.stdout + proc.stderr)
        return proc

    monkeypatch.setattr(lab, "cli", recorded)
    # A qcow2 base, as cloud images are: an overlay that read it as raw would not boot.
    qcow2 = tmp_path / "guest.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(guest_images["acpi"]), str(qcow2)], check=True)
    guest_images = dict(guest_images, **{"acpi-qcow2": qcow2})
    pool = lab.conn.storagePoolLookupByName  # called after apply has created the pool

    # 1. From nothing: images imported, overlays created, both guests boot.
    lab.spec("lab.yaml", lab_spec(lab, guest_images, "hello-one"))
    lab.cli("apply", check=0)
    log = wait_for_console(vm_log, "rcguest: ready")
    wait_for_console(deaf_log, "rcguest: ready")
    assert "rcguest: booted" in log
    assert marker(log, "root disk") == "vda root-boots: 1"
    assert set(marker(log, "seed-files").split()) >= {"meta-data", "user-data"}
    first_id = marker(log, "instance-id")
    assert first_id
    assert "rcguest: user-data: #cloud-config" in log
    assert re.search(r"^rcguest: user-data: .*hello-one", log, re.M), log
    assert marker(log, "data disk") == "vdb data-boots: 1"

    # The root disk is an overlay whose backing file is the imported base image.
    p = pool(lab.pool)
    p.refresh(0)
    base_path = p.storageVolLookupByName(f"{lab.name}-base.qcow2").path()
    root = ET.fromstring(p.storageVolLookupByName(f"{lab.dom('vm')}-vda.qcow2").XMLDesc(0))
    assert root.find("target/format").get("type") == "qcow2"
    assert root.findtext("backingStore/path") == base_path
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(lab.pool_path / f"{lab.dom('vm')}-vda.qcow2")],
                                     check=True, capture_output=True, text=True).stdout)
    assert (info["backing-filename"], info["backing-filename-format"]) == (base_path, "qcow2")

    # Converged: the seed, the overlays and the consoles read back as the spec says.
    again = lab.cli("plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr

    # The secret reached the guest, and nothing else: outputs, a plan file, the domain's
    # XML (its metadata), the seed volume readable by its owner only.
    assert f"rcguest: user-data: password: {secret}" in log
    plan_file = tmp_path / "p.json"
    lab.cli("plan", "--out", str(plan_file), "-o", "json", check=0)
    lab.cli("status", "-o", "json", check=0)
    said.append(plan_file.read_text())
    vm = lab.conn.lookupByName(lab.dom("vm"))
    said += [vm.XMLDesc(0), vm.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)]
    seed_file = lab.pool_path / f"{lab.dom('vm')}-cidata.iso"
    assert secret.encode() in seed_file.read_bytes()
    assert seed_file.stat().st_mode & 0o777 == 0o600
    monkeypatch.delenv("RCTEST_LAB_PASS")
    missing = lab.cli("plan")
    assert missing.returncode == 1
    assert "the environment variable RCTEST_LAB_PASS is not set" in missing.stderr, missing.stderr
    assert "lab.yaml:" in missing.stderr  # where the reference is
    monkeypatch.setenv("RCTEST_LAB_PASS", secret)
    assert not [text for text in said if secret in text]

    # 2. New user-data: the seed is rebuilt, and the running guest is left alone (on_change
    # defaults to defer); every later plan shows the new instance-id as pending a restart.
    lab.spec("lab.yaml", lab_spec(lab, guest_images, "hello-two"))
    changed = lab.cli("apply", check=0)
    ids = re.search(r"instance-id: (\S+) -> (\S+)", changed.stdout)
    assert ids and ids.group(1) == first_id, changed.stdout
    assert "hello" not in changed.stdout  # user-data is only shown as a hash
    assert lab.conn.lookupByName(lab.dom("vm")).isActive()
    assert vm_log.read_text().count("rcguest: booted") == 1
    pending = lab.cli("plan", "--detailed-exitcode", check=0)
    assert f"* pending domain {lab.dom('vm')}" in pending.stdout, pending.stdout
    assert f"cloud_init.instance_id: {first_id} -> {ids.group(2)}  [restart]" in pending.stdout, pending.stdout

    # The restart policy that allows it: apply --restart restarts the guest (gracefully), and
    # the guest reads the new seed: new user-data, new instance-id, same root overlay.
    restarted = lab.cli("apply", "--restart", check=0)
    assert f"< stop domain {lab.dom('vm')}: applied (graceful" in restarted.stdout, restarted.stdout
    assert lab.dom("deaf") not in restarted.stdout.split("Applying:")[-1]  # nothing pending there
    log = wait_for_console(vm_log, "rcguest: ready")
    assert re.search(r"^rcguest: user-data: .*hello-two", log, re.M), log
    assert "hello-one" not in log
    second_id = marker(log, "instance-id")
    assert second_id == ids.group(2) != first_id
    assert marker(log, "root disk") == "vda root-boots: 2"
    assert marker(log, "data disk") == "vdb data-boots: 2"
    lab.cli("plan", "--detailed-exitcode", check=0)
    assert "pending" not in lab.cli("plan").stdout

    # 3. Stop: the guest that answers the power button goes gracefully, long before its
    # timeout; the one that ignores it is forced after its timeout. Neither is an error.
    lab.spec("lab.yaml", lab_spec(lab, guest_images, "hello-two", state="stopped"))
    stopped = lab.cli("apply", "-o", "json", check=0)
    by_name = stop_results(stopped)
    graceful, forced = by_name[lab.dom("vm")], by_name[lab.dom("deaf")]
    assert (graceful["status"], graceful["outcome"]) == ("applied", "graceful"), graceful
    assert graceful["message"].startswith("graceful"), graceful
    assert graceful["duration"] < 60, graceful
    assert (forced["status"], forced["outcome"]) == ("applied", "forced"), forced
    assert forced["message"].startswith("forced: still running 10s after"), forced
    assert forced["duration"] >= 10, forced
    assert "rcguest: power button: powering off" in vm_log.read_text()
    assert "rcguest: power button: ignored" in deaf_log.read_text()

    # Started again: the same root overlay and data disk, one more boot on each.
    lab.spec("lab.yaml", lab_spec(lab, guest_images, "hello-two"))
    lab.cli("apply", check=0)
    log = wait_for_console(vm_log, "rcguest: ready")
    assert marker(log, "instance-id") == second_id
    assert marker(log, "root disk") == "vda root-boots: 3"
    assert marker(log, "data disk") == "vdb data-boots: 3"

    # 4. Nightly rebuild: destroy, then apply again. The root overlay is new (its boot count
    # starts over); the kept data disk still holds what the guest wrote on it.
    lab.cli("destroy", check=0)
    assert not lab.domain_names()
    data_path = pool(lab.pool).storageVolLookupByName(f"{lab.name}-data.img").path()
    with open(data_path, "rb") as f:
        written = f.read(512).rstrip(b"\0").decode()
    assert written.startswith(f"rcguest-data data-boots=3 instance-id={second_id} "), written

    lab.spec("lab.yaml", lab_spec(lab, guest_images, "hello-two"))
    lab.cli("apply", check=0)
    log = wait_for_console(vm_log, "rcguest: ready")
    assert marker(log, "root disk") == "vda root-boots: 1"
    assert marker(log, "data disk") == "vdb data-boots: 4"

    # 5. reconcile rebuild: back to a first boot without a destroy. The same domain (UUID,
    # MAC), a fresh root overlay (its boot count starts over where a restart would make it
    # 2), the kept data disk as the guest left it, and a seed with a new instance-id that
    # the guest prints. The other guest is not touched; a plan right after is empty.
    vm = lab.conn.lookupByName(lab.dom("vm"))
    uuid, mac = vm.UUIDString(), re.search(r"<mac address='([^']+)'", vm.XMLDesc(0)).group(1)
    deaf_uuid = lab.conn.lookupByName(lab.dom("deaf")).UUIDString()
    rebuilt = lab.cli("rebuild", "-o", "json", lab.dom("vm"), check=0)
    doc = json.loads(rebuilt.stdout)
    assert doc["ok"] and {a["name"] for a in doc["actions"]} >= {lab.dom("vm")}, doc
    assert not any(lab.dom("deaf") in a["name"] for a in doc["actions"]), doc
    log = wait_for_console(vm_log, "rcguest: ready")
    assert marker(log, "root disk") == "vda root-boots: 1"
    assert marker(log, "data disk") == "vdb data-boots: 5"
    third_id = marker(log, "instance-id")
    assert third_id == f"{second_id}-r1", (third_id, second_id)
    vm = lab.conn.lookupByName(lab.dom("vm"))
    assert vm.UUIDString() == uuid and f"<mac address='{mac}'" in vm.XMLDesc(0)
    assert lab.conn.lookupByName(lab.dom("deaf")).UUIDString() == deaf_uuid
    after = lab.cli("plan", "--detailed-exitcode")
    assert after.returncode == 0, after.stdout + after.stderr
    assert not [text for text in said if secret in text]
