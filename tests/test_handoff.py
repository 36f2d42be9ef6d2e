"""The lab handed to the next tool, without a real guest: readiness conditions (a TCP port
on a listener this test opens on 127.0.0.1, a console line, a lease from before a start),
and the inventory and ssh-config that the real clients (`ansible-inventory`, `ssh -G`) read.

libvirt's test driver has a running domain named `test` with an address (192.168.122.3,
from its ARP source); nothing connects to it: ansible-inventory and ssh -G only read files.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import pytest

from reconcile.apply.ready import Waiter, console_match, fresh_address
from reconcile.errors import HostError
from reconcile.model import Address, AddressSource, ConditionKind, DomainSpec, Guest, Nic, Origin, Ready

from .conftest import REPO, run_cli, write

TEST_URI = "test:///default"
ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"


def spec(name: str, ready: Ready | None) -> DomainSpec:
    return DomainSpec(name=name, memory=131072, vcpus=1, origin=Origin("t.yaml"), ready=ready)


class LoopbackHost:
    """A host whose guests all run at 127.0.0.1, so the prober only ever tries loopback."""

    def __init__(self, log: Path | None = None, agent_channel: bool = True):
        self.log, self.agent_channel = log, agent_channel

    def guests(self, names):
        return {n: Guest(n, "running", nics=(Nic("52:54:00:00:00:01", "net"),),
                         addresses=(Address("127.0.0.1", AddressSource.LEASE, "52:54:00:00:00:01"),),
                         console_log=str(self.log) if self.log else None, agent_channel=self.agent_channel)
                for n in names}

    def console_log(self, path):
        return Path(path).read_text() if Path(path).exists() else ""

    def agent_ping(self, name, timeout):
        raise HostError("Guest agent is not responding: QEMU guest agent is not connected", f"ping {name}")

    def lease_expiries(self):
        return {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_tcp_condition_holds_once_the_port_accepts_and_says_what_it_saw_until_then():
    late, never = free_port(), free_port()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def open_later():
        time.sleep(1.5)
        listener.bind(("127.0.0.1", late))
        listener.listen()

    opener = threading.Thread(target=open_later)
    opener.start()
    seen = []
    try:
        waiter = Waiter(LoopbackHost(), [spec("up", Ready(tcp=(late,))), spec("down", Ready(tcp=(never,)))],
                        timeout=4, poll=0.2, on_check=lambda name, check: seen.append((name, str(check.condition))))
        for name in ("up", "down"):
            waiter.watch(name)
        started = time.monotonic()
        results = {r.domain: r for r in waiter.finish()}
        took = time.monotonic() - started
    finally:
        opener.join()
        listener.close()
    up, down = results["up"], results["down"]
    assert up.ready and [str(c.condition) for c in up.checks] == ["running", "address", f"tcp {late}"]
    tcp = up.checks[-1]
    assert tcp.met and tcp.at >= 1.0 and "accepts connections" in tcp.seen
    assert ("up", f"tcp {late}") in seen
    assert not down.ready and down.failed.condition.kind is ConditionKind.TCP
    assert down.failed.seen == f"127.0.0.1:{never}: Connection refused"
    assert 3.5 <= down.waited <= 6 and took < 8


def test_a_console_condition_reads_the_log_line_by_line(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("SeaBIOS\r\nbooting\r\nlogin: \r\n")
    host = LoopbackHost(log)
    guest = host.guests(["vm"])["vm"]
    assert console_match(host, guest, r"^login:") == (True, "console: login:")
    assert console_match(host, guest, r"NEVER") == (False, "last console line: login:")
    log.write_text("")
    assert console_match(host, guest, r"x") == (False, "nothing on the console yet")


def test_an_agent_condition_says_what_libvirt_answered():
    waiter = Waiter(LoopbackHost(), [spec("vm", Ready(agent=True))], timeout=0.5, poll=0.1)
    waiter.watch("vm")
    (r,) = waiter.finish()
    assert not r.ready and r.failed.condition.kind is ConditionKind.AGENT
    assert "QEMU guest agent is not connected" in r.failed.seen


def test_an_agent_condition_without_the_agents_channel_fails_at_once():
    started = time.monotonic()
    waiter = Waiter(LoopbackHost(agent_channel=False), [spec("vm", Ready(agent=True))], timeout=60, poll=0.1)
    waiter.watch("vm")
    (r,) = waiter.finish()
    assert time.monotonic() - started < 5
    assert not r.ready and "no guest agent channel" in r.failed.seen and "apply --restart" in r.failed.seen


def test_a_probe_that_fails_unexpectedly_is_a_verdict_not_a_silent_success():
    class Broken(LoopbackHost):
        def agent_ping(self, name, timeout):
            raise ImportError("no module named libvirt_qemu")

    waiter = Waiter(Broken(), [spec("vm", Ready(agent=True))], timeout=60, poll=0.1)
    waiter.watch("vm")
    (r,) = waiter.finish()
    assert not r.ready and "the wait failed" in r.failed.seen


def test_a_lease_from_before_the_start_does_not_count():
    mac = "52:54:00:aa:bb:cc"
    guest = Guest("vm", "running", addresses=(Address("192.0.2.7", AddressSource.LEASE, mac, expires=1000),))
    assert fresh_address(guest, None)[0].ip == "192.0.2.7"  # not started by the run: its lease is its own
    assert fresh_address(guest, {mac: 999})[0].ip == "192.0.2.7"  # renewed after the start
    address, why = fresh_address(guest, {mac: 1000})
    assert address is None and "from before the domain was started" in why
    forever = Guest("vm", "running", addresses=(Address("192.0.2.7", AddressSource.LEASE, mac, expires=None),))
    assert fresh_address(forever, {mac: 1000})[0] is not None  # an infinite lease cannot be told apart: it counts


def test_a_domain_the_run_does_not_start_is_given_up_with_the_reason():
    waiter = Waiter(LoopbackHost(), [spec("vm", None)], timeout=5)
    waiter.gave_up("vm", "not started: skipped (because domain:vm:define failed)")
    (r,) = waiter.finish()
    assert not r.ready and r.failed.seen.startswith("not started: skipped")


# ------------------------------------------------------------------ inventory and ssh-config

HANDOFF_SPEC = """
    project: hand-off
    profiles:
      web:
        vars: {http_port: 8080, tier: front}
        groups: [web]
    domains:
      - name: test
        profile: web
        memory: 128MiB
        groups: [web, blue_team]
        ssh: {user: admin, port: 2222}
        vars: {tier: edge, packages: [nginx, curl]}
      - name: later
        memory: 128MiB
        interfaces: [{network: default, ip: 192.168.122.50}]
        groups: [db]
      - name: nowhere
        memory: 128MiB
    """


def handoff(tmp_path, *args) -> subprocess.CompletedProcess:
    write(tmp_path / "specs" / "lab.yaml", HANDOFF_SPEC)
    return run_cli(*args, str(tmp_path / "specs"), uri=TEST_URI, check=0)


def ansible_inventory(path: Path) -> dict:
    proc = subprocess.run([str(ANSIBLE_INVENTORY), "-i", str(path), "--list"], capture_output=True, text=True,
                          env={"PATH": f"{ANSIBLE_INVENTORY.parent}:/usr/bin:/bin", "ANSIBLE_LOCAL_TEMP": str(path.parent),
                               "HOME": str(path.parent), "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true"})
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def check_inventory(doc: dict) -> None:
    hostvars = doc["_meta"]["hostvars"]
    assert hostvars["test"] == {"ansible_host": "192.168.122.3", "ansible_user": "admin", "ansible_port": 2222,
                                "http_port": 8080, "tier": "edge", "packages": ["nginx", "curl"]}
    assert hostvars["later"] == {"ansible_host": "192.168.122.50"}  # reserved, not seen yet
    assert "ansible_host" not in hostvars.get("nowhere", {})
    assert sorted(doc["hand_off"]["hosts"]) == ["later", "nowhere", "test"]
    assert doc["web"]["hosts"] == ["test"] and doc["blue_team"]["hosts"] == ["test"]
    assert doc["db"]["hosts"] == ["later"]


def test_the_yaml_inventory_is_what_ansible_reads(tmp_path):
    proc = handoff(tmp_path, "inventory")
    assert "nowhere: no address yet: the domain does not exist" in proc.stderr
    assert "# nowhere: no address yet" in proc.stdout
    inventory = write(tmp_path / "inventory.yml", proc.stdout)
    check_inventory(ansible_inventory(inventory))


def test_the_list_json_backs_an_inventory_script(tmp_path):
    listed = json.loads(handoff(tmp_path, "inventory", "--list").stdout)
    check_inventory(listed)
    script = tmp_path / "lab_inventory.py"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({json.dumps(json.dumps(listed))})\n")
    script.chmod(0o755)
    check_inventory(ansible_inventory(script))


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs openssh-client (scripts/bootstrap installs it)")
def test_ssh_config_is_what_ssh_reads(tmp_path):
    proc = handoff(tmp_path, "ssh-config")
    config = write(tmp_path / "ssh_config", proc.stdout)

    def resolved(host: str) -> dict[str, str]:
        out = subprocess.run(["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, check=True)
        return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)

    test = resolved("test")
    assert (test["hostname"], test["user"], test["port"]) == ("192.168.122.3", "admin", "2222")
    assert resolved("later")["hostname"] == "192.168.122.50"
    assert resolved("nowhere")["hostname"] == "nowhere"  # commented out: ssh knows nothing of it
    assert "# Host nowhere: no address yet" in proc.stdout


def test_status_json_follows_its_schema(tmp_path):
    doc = json.loads(handoff(tmp_path, "status", "-o", "json").stdout)
    jsonschema.validate(doc, json.loads((REPO / "schemas" / "status.schema.json").read_text()))
    by_name = {d["name"]: d for d in doc["domains"]}
    test = by_name["test"]
    assert test["state"] == "running" and test["addresses"][0] == {
        "ip": "192.168.122.3", "source": "arp", "mac": "aa:bb:cc:dd:ee:ff", "prefix": 24}
    assert test["readiness"]["ready"] is True  # on a network with DHCP: waits for an address, which it has
    assert by_name["later"]["state"] == "absent" and by_name["later"]["reserved"][0]["ip"] == "192.168.122.50"
    assert by_name["later"]["readiness"]["conditions"][0] == {
        "condition": "running", "kind": "running", "met": False, "seen": "the domain is absent", "at": None}
    text = handoff(tmp_path, "status").stdout
    assert "test     running  aa:bb:cc:dd:ee:ff  192.168.122.3 (arp)  ready (running, address)" in text
    assert "later    absent  reserved 192.168.122.50  not ready: running: the domain is absent" in text


def test_wait_times_out_with_the_condition_and_what_was_seen(tmp_path):
    write(tmp_path / "specs" / "lab.yaml", """
        project: waits
        domains:
          - {name: test, memory: 128MiB, console: {log: /nonexistent/test.log}, ready: {console: NEVER}}
        """)
    started = time.monotonic()
    proc = run_cli("wait", str(tmp_path / "specs"), "--wait-timeout", "2", "-o", "json", uri=TEST_URI, check=1)
    assert time.monotonic() - started < 15
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, json.loads((REPO / "schemas" / "status.schema.json").read_text()))
    (r,) = doc["readiness"]
    assert not doc["ok"] and not r["ready"] and r["waited"] >= 2
    failed = [c for c in r["conditions"] if not c["met"]]
    assert failed[0]["condition"] == "console /NEVER/"
    text = run_cli("wait", str(tmp_path / "specs"), "--wait-timeout", "1", uri=TEST_URI, check=1)
    assert "not ready test: console /NEVER/:" in text.stdout and "not ready within 1s: test" in text.stdout


def test_a_lost_connection_ends_every_wait_at_once():
    from reconcile.errors import ConnectionLost

    class Gone(LoopbackHost):
        def guests(self, names):
            raise ConnectionLost("lost the connection to libvirtd (client socket is closed)", "read domain vm")

    started = time.monotonic()
    waiter = Waiter(Gone(), [spec("vm", None), spec("db", None)], timeout=60, poll=0.1)
    waiter.watch("vm")
    waiter.watch("db")
    results = waiter.finish()
    assert time.monotonic() - started < 5
    assert all(not r.ready and "lost the connection" in r.failed.seen for r in results)


def test_what_a_guest_or_a_spec_says_cannot_add_lines_to_the_ssh_config():
    from reconcile.codec import inventory as inv

    hostile = Guest("vm", "running", address_note="no lease\nHost *\n  ProxyCommand touch /tmp/owned\x1b[2J")
    tricky = DomainSpec(name="db", memory=131072, vcpus=1, origin=Origin("t.yaml"),
                        vars={"ansible_host": "10.0.0.5\n  ProxyCommand x", "ansible_user": "ops"})
    hosts = inv.hosts_of([spec("vm", None), tricky], {"vm": hostile, "db": Guest("db", "running")})
    text = inv.ssh_config(hosts, "header")
    lines = text.splitlines()
    assert not any(line.lstrip().startswith(("ProxyCommand", "Host *")) for line in lines), text
    assert "\x1b" not in text
    assert "Host db" in lines and "  User ops" in lines and not any("HostName" in line for line in lines)


@pytest.mark.parametrize("project, group", [("all", "project_all"), ("ungrouped", "project_ungrouped"),
                                            ("lab-2", "lab_2"), ("7lab", "_7lab")])
def test_the_project_group_is_a_name_ansible_accepts(project, group):
    from reconcile.codec import inventory as inv

    hosts = inv.hosts_of([spec("vm", None)], {"vm": Guest("vm", "absent")})
    listed = inv.inventory_list(project, hosts)
    assert listed[group] == {"hosts": ["vm"]} and listed["ungrouped"] == {"hosts": []}
    assert listed["_meta"]["hostvars"] == {"vm": {}}


def test_wait_options_that_would_do_nothing_are_usage_errors(tmp_path):
    write(tmp_path / "specs" / "lab.yaml", "domains: [{name: test, memory: 128MiB}]\n")
    dry = run_cli("apply", "--dry-run", "--wait", str(tmp_path / "specs"), uri=TEST_URI, check=1)
    assert "--wait: a --dry-run starts nothing to wait for" in dry.stderr
    alone = run_cli("apply", "--wait-timeout", "5", str(tmp_path / "specs"), uri=TEST_URI, check=1)
    assert "--wait-timeout: apply waits only with --wait" in alone.stderr
