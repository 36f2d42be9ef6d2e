"""A lab on an isolated DHCP network, as a nightly job uses one: `apply --wait` returns when
the guests have leases, `status` shows them at their addresses (one at the address its
spec reserves, under the name its spec gives, which the guest resolves through the
network's DNS), the inventory hands them to Ansible, and a destroy and apply give each the
same MAC and the same address. A guest whose NIC it has no driver for (e1000) never gets an
address, and the wait says so within its timeout.

The test guest (tests/guest) loads a virtio NIC driver, runs busybox's DHCP client and
prints `rcguest: address: eth0 IP hostname=NAME` and `rcguest: dns: NAME IP` on its console.
Nothing here opens a connection to a guest: the network is isolated (no forwarding), and
the guests' traffic goes only to libvirt's dnsmasq on its bridge.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from .conftest import REPO, wait_for_console, write

pytestmark = pytest.mark.libvirtd

SUBNET = "192.168.245"
STATUS_SCHEMA = json.loads((REPO / "schemas" / "status.schema.json").read_text())
PLAN_SCHEMA = json.loads((REPO / "schemas" / "plan.schema.json").read_text())


def lab_spec(lab, image: Path, with_deaf: bool = False) -> str:
    net = f"{lab.name}-net"
    deaf = f"""
          - name: {lab.dom('deaf')}
            disks: [{{pool: {lab.pool}, backing: {lab.name}-base.img}}]
            interfaces: [{{network: {net}, model: e1000}}]
            guest_agent: true
            console: {{log: {lab.console_log('deaf')}}}
            ready: {{address: true, agent: true, console: NEVER}}
    """ if with_deaf else ""
    return f"""
        networks:
          - {{name: {net}, ip: {SUBNET}.1, netmask: 255.255.255.0, dhcp: {{start: {SUBNET}.100, end: {SUBNET}.200}}}}
        images:
          - {{name: {lab.name}-base.img, pool: {lab.pool}, source: {image}, format: raw}}
        defaults:
          type: qemu
          memory: 128MiB
          groups: [lab]
        domains:
          - name: {lab.dom('alpha')}
            disks: [{{pool: {lab.pool}, backing: {lab.name}-base.img}}]
            interfaces: [{{network: {net}, ip: {SUBNET}.10}}]
            hostname: alpha
            console: {{log: {lab.console_log('alpha')}}}
            groups: [lab, db]
            ssh: {{user: admin}}
          - name: {lab.dom('beta')}
            disks: [{{pool: {lab.pool}, backing: {lab.name}-base.img}}]
            interfaces: [{{network: {net}}}]
            console: {{log: {lab.console_log('beta')}}}
            ready: {{address: true, console: "^rcguest: ready"}}
            groups: [web]
            vars: {{http_port: 8080}}
          - name: {lab.dom('gamma')}
            disks: [{{pool: {lab.pool}, backing: {lab.name}-base.img}}]
            interfaces: [{{network: {net}}}]
            console: {{log: {lab.console_log('gamma')}}}
            groups: [web]
        {deaf}"""


def status(lab) -> dict[str, dict]:
    proc = lab.cli("status", "-o", "json", check=0)
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, STATUS_SCHEMA)
    return {d["name"]: d for d in doc["domains"]}


def identity(domains: dict[str, dict]) -> dict[str, tuple]:
    return {name: (tuple(i["mac"] for i in d["interfaces"]), tuple(a["ip"] for a in d["addresses"]))
            for name, d in domains.items()}


def test_a_lab_is_reachable_at_known_addresses_when_apply_ends(lab, guest_images, tmp_path):
    names = [lab.dom(n) for n in ("alpha", "beta", "gamma")]
    lab.spec("lab.yaml", lab_spec(lab, guest_images["acpi"]))

    # 1. apply --wait returns once all three have leases (beta also waits for its console).
    started = time.monotonic()
    proc = lab.cli("apply", "--wait", "-o", "json", check=0)
    took = time.monotonic() - started
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, PLAN_SCHEMA)
    ready = {r["domain"]: r for r in doc["readiness"]}
    assert sorted(ready) == sorted(names) and all(r["ready"] for r in ready.values()), ready
    assert [c["condition"] for c in ready[lab.dom("beta")]["conditions"]] == \
        ["running", "address", "console /^rcguest: ready/"]
    assert [c["condition"] for c in ready[lab.dom("gamma")]["conditions"]] == ["running", "address"]
    for name in names:  # the lease the wait saw is the one the guest got (it prints it a moment later)
        address = next(c["seen"] for c in ready[name]["conditions"] if c["kind"] == "address")
        assert address.endswith(" (lease)")
        wait_for_console(lab.console_log(name.rsplit("-", 1)[1]), f"rcguest: address: eth0 {address.split()[0]}",
                         timeout=30)
    assert took < 240

    # 2. status: the reserved address, by lease, under the spec's hostname, which DNS knows.
    domains = status(lab)
    alpha = domains[lab.dom("alpha")]
    assert alpha["state"] == "running"
    assert alpha["addresses"][0]["ip"] == f"{SUBNET}.10" and alpha["addresses"][0]["source"] == "lease"
    log = wait_for_console(lab.console_log("alpha"), "rcguest: dns:")
    assert f"rcguest: address: eth0 {SUBNET}.10 hostname=alpha" in log
    assert f"rcguest: dns: alpha {SUBNET}.10" in log
    for d in domains.values():
        assert d["console"]["pty"].startswith("/dev/pts/") and d["readiness"]["ready"]
        assert d["addresses"][0]["ip"].startswith(f"{SUBNET}.")
    text = lab.cli("status", check=0).stdout
    assert f"{SUBNET}.10 (lease)" in text and "ready (running, address)" in text

    # 3. The inventory, as Ansible reads it.
    inventory = write(tmp_path / "inventory.yml", lab.cli("inventory", check=0).stdout)
    listed = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(inventory), "--list"],
                            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert listed.returncode == 0, listed.stderr
    seen = json.loads(listed.stdout)
    hostvars = seen["_meta"]["hostvars"]
    assert hostvars[lab.dom("alpha")] == {"ansible_host": f"{SUBNET}.10", "ansible_user": "admin"}
    assert hostvars[lab.dom("beta")]["http_port"] == 8080
    assert sorted(seen["web"]["hosts"]) == sorted(names[1:]) and seen["db"]["hosts"] == [lab.dom("alpha")]
    assert seen["lab"]["hosts"] == [lab.dom("alpha")]  # a list in a domain replaces the defaults' whole
    assert sorted(seen[lab.name.replace("-", "_")]["hosts"]) == sorted(names)  # the project's group

    # 4. Destroyed and made again: the same MACs, so the same addresses.
    before = identity(domains)
    lab.cli("destroy", check=0)
    assert not lab.domain_names()
    again = lab.cli("apply", "--wait", check=0)
    assert "Ready: 3 of 3 domains" in again.stdout, again.stdout
    assert identity(status(lab)) == before

    # 4b. rebuild --wait: the three back at their first boot, same MACs and addresses. Their
    # old leases are still there; the wait counts only those the guests ask for after their
    # start, so it ends after a boot, not at once.
    rebuilt = lab.cli("rebuild", "--wait", "-o", "json", check=0)
    doc = json.loads(rebuilt.stdout)
    jsonschema.validate(doc, PLAN_SCHEMA)
    assert sorted(r["domain"] for r in doc["readiness"]) == sorted(names)
    for r in doc["readiness"]:
        address = next(c for c in r["conditions"] if c["kind"] == "address")
        assert r["ready"] and address["at"] >= 2, r
    assert identity(status(lab)) == before

    # 5. A guest that never gets an address: the wait ends within its timeout, naming it
    # and each condition it was waiting for, with what was seen.
    lab.spec("lab.yaml", lab_spec(lab, guest_images["acpi"], with_deaf=True))
    started = time.monotonic()
    late = lab.cli("apply", "--wait", "--wait-timeout", "20", "-o", "json", check=1)
    took = time.monotonic() - started
    doc = json.loads(late.stdout)
    jsonschema.validate(doc, PLAN_SCHEMA)
    assert not doc["ok"] and all(r["status"] == "applied" for r in doc["results"])
    deaf = next(r for r in doc["readiness"] if r["domain"] == lab.dom("deaf"))
    assert not deaf["ready"] and 20 <= deaf["waited"] < 30
    conditions = {c["kind"]: c for c in deaf["conditions"]}
    assert conditions["running"]["met"]
    assert "does the guest run a DHCP client?" in conditions["address"]["seen"]
    assert "agent" in conditions["agent"]["seen"].lower()  # what libvirt answered
    assert conditions["console"]["seen"].startswith("last console line: ")
    assert took < 20 + 40, took
    assert all(r["ready"] for r in doc["readiness"] if r["domain"] != lab.dom("deaf"))
    text = lab.cli("wait", "--wait-timeout", "3", check=1)
    assert f"not ready {lab.dom('deaf')}: address: no lease for" in text.stdout
    assert f"not ready within 3s: {lab.dom('deaf')}" in text.stdout
    missing = lab.cli("inventory", check=0)
    assert f"{lab.dom('deaf')}: no address yet: no lease for" in missing.stderr
