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
