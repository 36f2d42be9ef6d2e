"""Bringing an existing host into git, on the real qemu:///system daemon.

Every shape of domain the suite makes (the seed document's VM, one with no devices at all,
one with devices no spec field describes, one reconcile made) is exported with `--all
--match`; the spec printed must validate, plan empty before and after `apply --adopt`, and
an update of an adopted domain must keep every device the spec does not describe. `import`
of the seed document's XML defines a domain that plans empty afterwards.
"""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from reconcile.codec import devices

from .conftest import DOMAIN_TYPE, run_cli
from .test_drift import SEED_701
from .test_roundtrip import isolated_network, make_iso

pytestmark = pytest.mark.libvirtd

# Devices reconcile does not model, each of a kind libvirt defines without a device on the
# host behind it.
UNMODELED_DEVICES = """
    <serial type='pty'><target port='0'/></serial>
    <serial type='file'><source path='{log}'/><target port='1'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <graphics type='vnc' autoport='yes'/>
    <sound model='ich9'/>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <watchdog model='i6300esb' action='reset'/>
    <input type='tablet' bus='usb'/>
    <video><model type='vga'/></video>
    <video><model type='virtio'/></video>
    <filesystem type='mount' accessmode='mapped'><source dir='{share}'/><target dir='hostshare'/></filesystem>
    <smartcard mode='host'/>
    <hub type='usb'/>
    <panic model='isa'/>
    <channel type='pty'><target type='virtio' name='org.example.chan'/></channel>
"""


def bare(name: str, devices_xml: str = "") -> str:
    return (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
            f"<os><type arch='x86_64'>hvm</type></os><devices>{devices_xml}</devices></domain>")


def seed_xml(lab, name: str) -> str:
    """The seed document's VM, with its disk a raw volume of the lab's pool."""
    image = Path(lab.pool_path) / f"{name}.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "16M"], check=True)
    lab.conn.storagePoolLookupByName(lab.pool).refresh(0)
    return SEED_701.format(name=name, image=image).replace("<uuid></uuid>", "")


def unmodeled_of(lab, name: str) -> list[str]:
    xml = lab.conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return [d.xml for d in devices.unmodeled(ET.fromstring(xml))]


def test_every_shape_exports_to_a_spec_that_validates_plans_empty_and_adopts_keeping_its_devices(lab):
    net, net_spec = isolated_network(lab)
    lab.spec("net.yaml", f"""
        networks:
        {net_spec}
        """)
    iso = make_iso(lab, "adopt")
    made = lab.dom("made")
    lab.spec("made.yaml", f"""
        domains:
          - name: {made}
            type: {DOMAIN_TYPE}
            memory: 96MiB
            vcpus: 2
            boot: [hd, cdrom]
            disks: [{{pool: {lab.pool}, size: 8MiB}}, {{pool: {lab.pool}, size: 4MiB, format: raw, bus: sata}}]
            cdroms: [{{path: {iso}}}]
            interfaces: [{{network: {net}}}]
            console: {{log: {lab.console_log('made')}}}
            guest_agent: true
            graphics: {{type: spice}}
            state: stopped
        """)
    lab.cli("apply", check=0)
    seed, bare_seed, empty, odd = lab.dom("seed"), lab.dom("seed-bare"), lab.dom("empty"), lab.dom("odd")
    lab.conn.defineXML(seed_xml(lab, seed))
    # The seed's shape without its devices: its boot order names a cdrom and a disk it lacks.
    whole = seed_xml(lab, bare_seed)
    lab.conn.defineXML(whole[:whole.index("<devices>")] + "<devices/>" + whole[whole.index("</devices>") + 10:])
    lab.conn.defineXML(bare(empty))
    share = lab.log_dir / "share"
    share.mkdir()
    lab.conn.defineXML(bare(odd, UNMODELED_DEVICES.format(log=lab.log_dir / "serial1.log", share=share)))
    theirs = lab.dom("theirs")  # managed by another project: left out of an --all
    other = lab.specs.parent / "other"
    other.mkdir()
    (other / "o.yaml").write_text(f"project: {lab.name}-x\ndomains:\n  - {{name: {theirs}, type: {DOMAIN_TYPE}, "
                                  "memory: 64MiB, state: stopped}\n")
    run_cli("apply", str(other), check=0)
    before = unmodeled_of(lab, odd)
    assert len(before) == 11, before

    export = run_cli("export", "--project", lab.name, "--all", "--match", f"{lab.name}-*", check=0)
    assert f"left out, managed by a project other than {lab.name}: {theirs} ({lab.name}-x)" in export.stderr
    text = export.stdout
    for device in before:
        assert f"# not managed: {device}\n" in text
    assert "# not managed: <sound model=\"ich9\" />\n" in text
    (lab.specs / "made.yaml").unlink()
    lab.spec("exported.yaml", text)
    names = {d["name"] for d in json.loads(run_cli("export", "--project", lab.name, "--all", "--match",
                                                   f"{lab.name}-*", "-o", "json", check=0).stdout)["domains"]}
    assert names == {made, seed, bare_seed, empty, odd}
    block = text[text.index(f"- name: {bare_seed}\n"):]
    assert "boot:" not in block[:block.index("state:")]  # naming devices it lacks: left as it is

    lab.cli("validate", check=0)
    plan = lab.cli("plan", "--detailed-exitcode", check=0)
    for name in (seed, bare_seed, empty, odd):
        assert f"= domain {name}: unmanaged (exists)" in plan.stdout
    assert f"= domain {odd}: not managed, kept as they are" in plan.stdout
    lab.cli("apply", "--adopt", check=0)
    lab.cli("plan", "--detailed-exitcode", check=0)

    # An update of the adopted domain (its memory) keeps every device the spec does not describe.
    start = text.index(f"- name: {odd}\n")
    end = text.find("\n- ", start)
    block = text[start:] if end == -1 else text[start:end]
    assert "  memory: 64MiB\n" in block
    lab.spec("exported.yaml", text.replace(block, block.replace("  memory: 64MiB\n", "  memory: 80MiB\n")))
    changed = lab.cli("plan", "--detailed-exitcode", check=2)
    assert f"~ update domain {odd}" in changed.stdout and "memory: 64MiB -> 80MiB" in changed.stdout
    lab.cli("apply", check=0)
    assert lab.conn.lookupByName(odd).maxMemory() == 80 * 1024
    assert unmodeled_of(lab, odd) == before
    lab.cli("plan", "--detailed-exitcode", check=0)


def test_import_of_the_seed_documents_vm_defines_it_and_then_plans_empty(lab, tmp_path):
    lab.cli("apply", check=0)  # the lab's pool
    name = lab.dom("imported")
    xml_file = tmp_path / "701.xml"
    xml_file.write_text(seed_xml(lab, name).replace("<devices>", "<devices>\n    <sound model='ich9'/>"))
    imported = run_cli("import", "--project", lab.name, str(xml_file), check=0)
    assert "# not carried over: <sound model=\"ich9\" />" in imported.stdout
    assert f"{xml_file}: 1 element not carried over" in imported.stderr
    lab.spec("imported.yaml", imported.stdout)
    lab.cli("validate", check=0)
    lab.cli("plan", "--detailed-exitcode", check=2)
    lab.cli("apply", check=0)
    dom = lab.conn.lookupByName(name)
    assert not dom.isActive()  # a definition says nothing of running: defined, stopped
    xml = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert xml.get("type") == "qemu" and xml.find("os/type").get("arch") == "i686"
    assert dom.maxMemory() == 512000
    assert [b.get("dev") for b in xml.findall("os/boot")] == ["cdrom", "hd"]
    disks = {d.find("target").get("dev"): d for d in xml.findall("devices/disk")}
    assert disks["hda"].find("source").attrib == {"pool": lab.pool, "volume": f"{name}.img"}
    assert disks["hdc"].find("source").get("file") == "/usr/src/ubuntu-10.04-desktop-i386.iso"
    assert xml.find("devices/graphics").get("port") == "5901"
    lab.cli("plan", "--detailed-exitcode", check=0)
    # The volume was there before: attached, never owned, so a destroy leaves it.
    lab.cli("destroy", check=0)
    assert f"{name}.img" in lab.volume_names()

    assert run_cli("import", str(xml_file), check=0).stdout == imported.stdout.replace(f"project: {lab.name}\n", "")


def test_import_refuses_what_would_lose_data_at_its_line(lab, tmp_path):
    lab.cli("apply", check=0)
    name = lab.dom("stray")
    unlisted = lab.pool_path / f"{name}.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(unlisted), "1M"], check=True)  # not refreshed
    xml_file = tmp_path / "stray.xml"
    xml_file.write_text(f"""<domain type='qemu'>
  <name>{name}</name>
  <memory>65536</memory>
  <devices>
    <disk type='file' device='disk'><source file='{unlisted}'/><target dev='vda'/></disk>
    <disk type='file' device='disk'><source file='/nonexistent/{name}.img'/><target dev='vdb'/></disk>
  </devices>
</domain>
""")
    bad = run_cli("import", str(xml_file), check=1)
    assert "Traceback" not in bad.stderr and bad.stdout == ""
    assert (f"{xml_file}:5:5: resource '{name}': disks[vda]: disk vda is {unlisted}, in the directory of pool "
            f"{lab.pool} but not one of its volumes: if the file exists, `virsh pool-refresh {lab.pool}` makes it "
            "one") in bad.stderr
    assert (f"{xml_file}:6:5: resource '{name}': disks[vdb]: disk vdb is /nonexistent/{name}.img, which is in no "
            "storage pool") in bad.stderr
    assert "2 problems in the domain XML files; no spec was printed." in bad.stderr
