"""A domain's identity lasts: an interface without a MAC gets one derived from the project,
the domain and its position, so a domain destroyed and created again has the same MAC (and
so the same DHCP lease), while a domain that already has a MAC keeps it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from reconcile.spec.domain import derived_mac

from .conftest import DOMAIN_TYPE, REPO, write


def test_a_derived_mac_is_stable_and_in_qemus_range():
    mac = derived_mac("lab", "web01", 0)
    assert mac == derived_mac("lab", "web01", 0)
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", mac)
    assert len({mac, derived_mac("lab", "web01", 1), derived_mac("lab", "web02", 0),
                derived_mac("other", "web01", 0)}) == 4


def test_a_derived_mac_that_another_interface_has_is_reported(tmp_path):
    taken = derived_mac("idp", "a", 0)
    spec = write(tmp_path / "s.yaml", f"""
        project: idp
        domains:
          - {{name: a, memory: 64MiB, interfaces: [{{network: n}}]}}
          - {{name: b, memory: 64MiB, interfaces: [{{network: n, mac: "{taken}"}}]}}
        """)
    done = subprocess.run([sys.executable, "-m", "reconcile", "validate", str(spec)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert f"interfaces[0].mac: MAC {taken} is already used by domain 'a'" in done.stderr, done.stderr


@pytest.mark.libvirtd
def test_destroy_and_apply_give_the_same_mac(lab):
    """An isolated network with no address (no DHCP, no traffic) and a stopped domain."""
    lab.spec("d.yaml", f"""
        networks:
          - {{name: {lab.name}-net, bridge: {lab.name[-8:]}br}}
        domains:
          - name: {lab.dom('web')}
            type: {DOMAIN_TYPE}
            memory: 64MiB
            state: stopped
            interfaces: [{{network: {lab.name}-net}}, {{network: {lab.name}-net}}]
        """)

    def macs() -> list[str]:
        return re.findall(r"<mac address='([0-9a-f:]+)'/>", lab.conn.lookupByName(lab.dom("web")).XMLDesc(0))

    lab.cli("apply", check=0)
    first = macs()
    assert first == [derived_mac(lab.name, lab.dom("web"), 0), derived_mac(lab.name, lab.dom("web"), 1)]
    lab.cli("plan", "--detailed-exitcode", check=0)
    lab.cli("destroy", check=0)
    lab.cli("apply", check=0)
    assert macs() == first
    lab.cli("plan", "--detailed-exitcode", check=0)


@pytest.mark.parametrize("ip, message", [
    ("192.168.77.50", "is not a host address of network 'n' (192.168.237.0/24)"),
    ("192.168.237.20", "is inside the DHCP range 192.168.237.10-192.168.237.99 of network 'n'"),
    ("192.168.237.1", "is the host's own address on network 'n'"),
])
def test_a_reserved_ip_must_fit_its_network(tmp_path, ip, message):
    spec = write(tmp_path / "s.yaml", f"""
        networks:
          - {{name: n, ip: 192.168.237.1, dhcp: {{start: 192.168.237.10, end: 192.168.237.99}}}}
        domains:
          - {{name: a, memory: 64MiB, interfaces: [{{network: n, ip: {ip}}}]}}
          - {{name: b, memory: 64MiB, hostname: "bad <name>", interfaces: [{{network: n}}]}}
          - {{name: c, memory: 64MiB, interfaces: [{{network: n, ip: 192.168.237.150}}]}}
          - {{name: d, memory: 64MiB, interfaces: [{{network: n, ip: 192.168.237.150}}]}}
        """)
    done = subprocess.run([sys.executable, "-m", "reconcile", "validate", str(spec)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert message in done.stderr, done.stderr
    assert "resource 'b': hostname:" in done.stderr  # markup or spaces in a hostname: located, no traceback
    assert "resource 'd': interfaces[0].ip: 192.168.237.150 is already reserved for domain 'c'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.libvirtd
def test_a_reserved_address_is_added_changed_and_removed_on_the_live_network(lab):
    """An isolated network with DHCP (its dnsmasq serves this machine only) and a stopped
    domain: the reservation follows the spec without the network ever going down."""
    net = f"{lab.name}-rsv"

    def spec(ip: str | None) -> None:
        reserved = f", ip: {ip}" if ip else ""
        lab.spec("r.yaml", f"""
            networks:
              - {{name: {net}, ip: 192.168.237.1, dhcp: {{start: 192.168.237.10, end: 192.168.237.99}}}}
            domains:
              - name: {lab.dom('r')}
                type: {DOMAIN_TYPE}
                memory: 64MiB
                state: stopped
                hostname: rsv01
                interfaces: [{{network: {net}{reserved}}}]
            """)

    def hosts() -> list[tuple[str, str, str]]:
        xml = lab.conn.networkLookupByName(net).XMLDesc(0)
        return re.findall(r"<host mac='([0-9a-f:]+)' name='([^']+)' ip='([0-9.]+)'/>", xml)

    mac = derived_mac(lab.name, lab.dom("r"), 0)
    spec("192.168.237.120")
    lab.cli("apply", check=0)
    uuid = lab.conn.networkLookupByName(net).UUIDString()
    assert hosts() == [(mac, "rsv01", "192.168.237.120")]
    assert "<hostname>rsv01</hostname>" in lab.conn.networkLookupByName(net).XMLDesc(0)
    lab.cli("plan", "--detailed-exitcode", check=0)

    spec("192.168.237.121")
    changed = lab.cli("apply", check=0)
    assert f"~ update network {net}  (reservations: 1 to add, 1 to remove; live" in changed.stdout, changed.stdout
    assert hosts() == [(mac, "rsv01", "192.168.237.121")]
    assert lab.conn.networkLookupByName(net).isActive() and lab.conn.networkLookupByName(net).UUIDString() == uuid
    lab.cli("plan", "--detailed-exitcode", check=0)

    spec(None)
    lab.cli("apply", check=0)
    assert hosts() == []
    assert "rsv01" not in lab.conn.networkLookupByName(net).XMLDesc(0)
    lab.cli("plan", "--detailed-exitcode", check=0)


def test_a_hostname_is_one_domains_and_never_a_default(tmp_path):
    twice = write(tmp_path / "twice" / "s.yaml", """
        domains:
          - {name: a, memory: 64MiB, hostname: web}
          - {name: b, memory: 64MiB, hostname: WEB}
        """)
    shared = write(tmp_path / "shared" / "s.yaml", """
        defaults: {hostname: web}
        domains:
          - {name: a, memory: 64MiB}
        """)
    for spec, message in ((twice, "resource 'b': hostname: 'WEB' is already the hostname of domain 'a'"),
                          (shared, "defaults.hostname: 'hostname' cannot be set in defaults")):
        done = subprocess.run([sys.executable, "-m", "reconcile", "validate", str(spec)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and message in done.stderr, done.stderr
