"""Updates patch the domain's own XML: what the spec does not manage survives, byte for byte."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from reconcile.codec import domain as domxml
from reconcile.model import Cdrom, Console, Disk, DomainSpec, Graphics, Interface, Origin, Ownership

BASE = """
<domain type='kvm'>
  <name>web</name>
  <uuid>6f1b7d0e-1111-2222-3333-444455556666</uuid>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>
    <nvram>/var/lib/libvirt/qemu/nvram/web_VARS.fd</nvram>
    <boot dev='hd'/>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool='default' volume='web.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/isos/old.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
      <address type='drive' controller='0' bus='0' target='0' unit='0'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source network='default'/>
      <model type='virtio'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <serial type='pty'><target type='isa-serial' port='0'/></serial>
    <video><model type='qxl'/></video>
  </devices>
</domain>
"""

SPEC = DomainSpec(
    name="web", memory=524288, vcpus=2, origin=Origin("web.yaml"), boot=("hd",),
    disks=(Disk(target="vda", pool="default", volume="web.qcow2", size=1 << 30),),
    cdroms=(Cdrom(target="sda", path="/isos/new.iso"),),
    interfaces=(Interface(network="default"), Interface(network="lab", model="e1000")),
    graphics=Graphics(listen="127.0.0.1"),
)


def patched(spec: DomainSpec = SPEC) -> ET.Element:
    return ET.fromstring(domxml.domain_xml(spec, Ownership(project="p"), current=BASE))


def test_update_keeps_identity_firmware_and_unmanaged_devices():
    root = patched()
    assert root.findtext("uuid") == "6f1b7d0e-1111-2222-3333-444455556666"
    assert root.findtext("os/nvram") == "/var/lib/libvirt/qemu/nvram/web_VARS.fd"
    assert root.find("os/loader").get("type") == "pflash"
    assert root.find("os/type").get("machine") == "pc-q35-7.2"
    assert root.find("devices/serial") is not None and root.find("devices/video/model").get("type") == "qxl"
    assert root.findtext("devices/emulator") == "/usr/bin/qemu-system-x86_64"


def test_generated_mac_stays_with_its_interface_and_unchanged_devices_keep_addresses():
    root = patched()
    first, second = root.findall("devices/interface")
    assert first.find("mac").get("address") == "52:54:00:aa:bb:cc"
    assert first.find("address").get("bus") == "0x01"  # unchanged: left exactly as it was
    assert second.find("mac") is None  # new: libvirt generates one
    disk = next(d for d in root.findall("devices/disk") if d.get("device") == "disk")
    assert disk.find("address").get("bus") == "0x04"
    cdrom = next(d for d in root.findall("devices/disk") if d.get("device") == "cdrom")
    assert cdrom.find("source").get("file") == "/isos/new.iso"
    assert cdrom.find("address").get("unit") == "0"  # media change: same drive


def test_patched_xml_reads_back_as_the_spec():
    got = domxml.essence_of(ET.tostring(patched(), encoding="unicode"))
    want = SPEC.essence()
    for key in ("memory", "current_memory", "vcpus", "boot", "disks", "cdroms"):
        assert got[key] == want[key], key
    assert [{k: i[k] for k in ("network", "model")} for i in got["interfaces"]] == want["interfaces"]
    assert {k: got["graphics"][k] for k in want["graphics"]} == want["graphics"]


def test_interfaces_left_out_are_not_touched():
    root = patched(DomainSpec(name="web", memory=262144, vcpus=1, origin=Origin("web.yaml")))
    assert [i.find("mac").get("address") for i in root.findall("devices/interface")] == ["52:54:00:aa:bb:cc"]


def test_console_with_a_log_replaces_a_bare_serial_port():
    spec = DomainSpec(name="web", memory=262144, vcpus=1, origin=Origin("web.yaml"),
                      console=Console(log="/var/log/guests/web.log"))
    root = patched(spec)
    (serial,) = root.findall("devices/serial")
    assert serial.get("type") == "pty"
    assert serial.find("log").attrib == {"file": "/var/log/guests/web.log", "append": "off"}
    assert root.find("devices/console/target").get("type") == "serial"
    assert domxml.essence_of(ET.tostring(root, encoding="unicode"))["console"] == spec.essence()["console"]
    # Already as the spec says: kept as it is, with what libvirt filled in.
    again = ET.fromstring(domxml.domain_xml(spec, Ownership(project="p"), current=ET.tostring(root, encoding="unicode")))
    assert ET.tostring(again.find("devices/serial")) == ET.tostring(serial)
