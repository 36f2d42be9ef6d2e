"""The round-trip matrix on the real qemu:///system daemon: every spec field, several values.

For each field, specs that set it to several values (and leave it out) are applied; libvirt
fills the XML with its own defaults, and the next plan must still be empty. Then every
domain moves to other values of its fields (an update through each change class) and the
plan after that apply must be empty again. This is the promise of "no perpetual diffs".
"""

from __future__ import annotations

import json
import random
import subprocess

import libvirt
import pytest

from .conftest import DOMAIN_TYPE, REPO

pytestmark = pytest.mark.libvirtd

OTHER_TYPE = "qemu" if DOMAIN_TYPE == "kvm" else "kvm"


def isolated_network(lab) -> tuple[str, str]:
    """Spec text of an isolated network (no forwarding) on a subnet unlikely to be taken."""
    net = f"{lab.name}-net"
    third = random.randint(0, 254)
    second = random.randint(200, 254)
    return net, f"""
          - name: {net}
            bridge: {lab.name[-6:]}br
            ip: 10.{second}.{third}.1
            netmask: 255.255.255.0
            dhcp: {{start: 10.{second}.{third}.10, end: 10.{second}.{third}.20}}
        """


def make_iso(lab, name: str) -> str:
    path = lab.pool_path.parent / f"{lab.name}-{name}.iso"
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["genisoimage", "-quiet", "-o", str(path), str(REPO / "specs")], check=True)
    return str(path)


def matrix(lab, net: str, iso1: str, iso2: str, variant: int) -> str:
    """Domains covering every field; variant 1 moves each field to another value."""
    a = variant == 0
    pool = lab.pool
    return f"""
        domains:
          # Everything left out but what is required: libvirt's defaults must not show.
          - name: {lab.dom('min')}
            memory: {'64MiB' if a else '96MiB'}
            type: {DOMAIN_TYPE}
            state: stopped
          # A running domain with most fields given: live XML and persistent config both match.
          - name: {lab.dom('run')}
            type: {DOMAIN_TYPE}
            arch: x86_64
            machine: {'pc' if a else 'pc-i440fx-7.2'}
            memory: {'128MiB' if a else '160MiB'}
            current_memory: {'96MiB' if a else '128MiB'}
            vcpus: {1 if a else 2}
            max_vcpus: {2 if a else 3}
            boot: {'[cdrom, hd]' if a else '[hd, cdrom]'}
            disks:
              - {{pool: {pool}, size: 16MiB}}
              - {{pool: {pool}, size: {'8MiB' if a else '12MiB'}, format: raw, bus: sata, name: {lab.dom('run')}-data.img, keep: {'false' if a else 'true'}}}
            cdroms:
              - {{path: {iso1 if a else iso2}}}
            graphics: {{type: vnc, listen: 127.0.0.1{'' if a else ', port: auto'}}}
            console: {{log: {lab.console_log('run' if a else 'run-moved')}}}
            interfaces:
              - {{network: {net}}}
              {'' if a else f'- {{network: {net}, model: e1000}}'}
            guest_agent: {'true' if a else 'false'}
            autostart: {'false' if a else 'true'}
            on_change: restart
            stop_timeout: 1
          # Stopped, with other values of each field.
          - name: {lab.dom('alt')}
            type: {OTHER_TYPE if a else DOMAIN_TYPE}
            arch: {'i686' if a else 'x86_64'}
            machine: {'q35' if a else 'pc-q35-7.2'}
            memory: {'1GiB' if a else '512MiB'}
            vcpus: {2 if a else 4}
            boot: {'[network, hd]' if a else '[hd]'}
            disks:
              - {{pool: {pool}, size: 8MiB, format: {'qcow2' if a else 'raw'}, target: vdc, name: {lab.dom('alt')}-sys}}
              - {{pool: {pool}, size: 8MiB, bus: scsi}}
              {'' if a else f'- {{pool: {pool}, size: 4MiB, bus: usb}}'}
            cdroms:
              - {{path: {iso1}, bus: {'sata' if a else 'scsi'}, target: sdd}}
              {'' if a else f'- {{path: {iso2}, bus: usb}}'}
            graphics: {{type: {'spice' if a else 'vnc'}, port: {'5960' if a else '5961'}}}
            {'console: {}' if a else ''}
            interfaces:
              {f'- {{network: {net}, mac: "52:54:00:4e:00:01", model: rtl8139}}' if a else f'- {{network: {net}, mac: "52:54:00:4e:00:02"}}'}
              - {{network: {net}, model: e1000e}}
            {'' if a else 'guest_agent: true'}
            autostart: {'true' if a else 'false'}
            state: stopped
          # IDE everything, as the tutorial VM: pc machine, ide disk and cdrom.
          - name: {lab.dom('ide')}
            type: {DOMAIN_TYPE}
            machine: pc
            memory: 64MiB
            boot: [cdrom, hd]
            disks:
              - {{pool: {pool}, size: 8MiB, bus: ide, target: hda}}
            cdroms:
              - {{path: {iso2}, bus: ide, target: hdc}}
            interfaces: {'[]' if a else f'[{{network: {net}, model: virtio}}]'}
            state: {'stopped' if a else 'running'}
            stop_timeout: 1
        """


def test_every_field_round_trips_and_updates_converge(lab):
    net, net_spec = isolated_network(lab)
    lab.spec("net.yaml", f"""
        networks:
        {net_spec}
        """)
    iso1, iso2 = make_iso(lab, "one"), make_iso(lab, "two")
    lab.spec("matrix.yaml", matrix(lab, net, iso1, iso2, 0))

    lab.cli("apply", check=0)
    first = lab.cli("plan", "--detailed-exitcode")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "pending" not in first.stdout, first.stdout

    run = lab.conn.lookupByName(lab.dom("run"))
    uuid = run.UUIDString()
    macs = [line for line in run.XMLDesc(0).splitlines() if "<mac address" in line]
    assert run.isActive()
    assert "org.qemu.guest_agent.0" in run.XMLDesc(0), "guest_agent: true gives the agent's channel"

    # Every field to another value: live, next-boot, restart and recreate changes at once.
    lab.spec("matrix.yaml", matrix(lab, net, iso1, iso2, 1))
    plan = lab.cli("plan", "--allow-recreate", "--output", "json", check=0)
    doc = json.loads(plan.stdout)
    classes = {c["class"] for a in doc["actions"] for c in a["changes"]}
    assert {"live", "next-boot", "restart", "recreate"} <= classes, classes

    applied = lab.cli("apply", "--allow-recreate")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    second = lab.cli("plan", "--detailed-exitcode")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "pending" not in second.stdout, second.stdout

    run = lab.conn.lookupByName(lab.dom("run"))
    assert run.UUIDString() == uuid
    assert run.isActive()
    xml = run.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert macs[0].strip() in xml, "the generated MAC of the first interface was kept"
    assert "org.qemu.guest_agent.0" not in xml, "guest_agent: false removes the channel"
    alt = lab.conn.lookupByName(lab.dom("alt")).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert f"<domain type='{DOMAIN_TYPE}'" in alt and "52:54:00:4e:00:02" in alt
    assert "org.qemu.guest_agent.0" in alt
