"""Devices no spec field describes: which they are, that an update keeps every one of them,
and how a plan names them. Pure: no libvirt."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from reconcile import plan as planner
from reconcile.cli.render import plan_json, plan_summary, plan_text
from reconcile.codec import devices
from reconcile.codec import domain as domxml
from reconcile.model import (Console, DomainSpec, Graphics, NoteKind, Observed, ObservedDomain, Origin, Ownership,
                             UnmodeledDevice)

# A domain as libvirt shows one made by hand: what it adds on its own (controllers, PS/2
# input, a plain video card, the balloon, a silent audio backend), what a spec describes,
# and devices it does not.
HAND_MADE = """
<domain type='kvm'>
  <name>hand</name>
  <memory unit='KiB'>262144</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><source file='/x/a.img'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='floppy'><source file='/x/boot.img'/><target dev='fda' bus='fdc'/></disk>
    <controller type='usb' index='0' model='piix3-uhci'><address type='pci' slot='0x01'/></controller>
    <interface type='network'><source network='default'/><model type='virtio'/></interface>
    <serial type='pty'><target port='0'/></serial>
    <serial type='file'><source path='/var/log/second.log'/><target port='1'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <console type='pty'><target type='virtio' port='1'/></console>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>
    <input type='mouse' bus='ps2'/>
    <input type='keyboard' bus='ps2'/>
    <input type='tablet' bus='usb'><address type='usb' bus='0' port='1'/></input>
    <graphics type='vnc' port='-1' autoport='yes'/>
    <graphics type='spice' autoport='yes'/>
    <sound model='ich9'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </sound>
    <audio id='1' type='none'/>
    <video><model type='cirrus' vram='16384' heads='1' primary='yes'/><alias name='video0'/></video>
    <video><model type='virtio' heads='1'/></video>
    <memballoon model='virtio'><address type='pci' slot='0x05'/></memballoon>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <watchdog model='i6300esb' action='reset'/>
  </devices>
</domain>
"""


def test_only_what_no_spec_field_describes_is_listed_without_libvirts_addresses():
    found = devices.unmodeled(ET.fromstring(HAND_MADE))
    assert [d.tag for d in found] == ["disk", "serial", "console", "channel", "input", "graphics", "sound", "video",
                                      "rng", "watchdog"]
    by_tag = {d.tag: d.xml for d in found}
    assert by_tag["sound"] == '<sound model="ich9" />'
    assert by_tag["rng"] == '<rng model="virtio"><backend model="random">/dev/urandom</backend></rng>'
    assert by_tag["input"] == '<input type="tablet" bus="usb" />'
    assert by_tag["disk"].startswith('<disk type="file" device="floppy">')
    assert all("\n" not in d.xml and "address" not in d.xml for d in found)


def test_a_domain_with_only_what_libvirt_adds_has_nothing_unmodeled():
    plain = """<domain type='kvm'><name>p</name><devices>
      <emulator>/usr/bin/qemu-system-x86_64</emulator>
      <controller type='pci' index='0' model='pci-root'/>
      <serial type='pty'><target type='isa-serial' port='0'><model name='isa-serial'/></target></serial>
      <console type='pty'><target type='serial' port='0'/></console>
      <input type='mouse' bus='ps2'/><input type='keyboard' bus='ps2'/>
      <graphics type='spice' port='5960' autoport='no'/><audio id='1' type='spice'/>
      <video><model type='qxl' ram='65536' vram='65536' vgamem='16384' heads='1' primary='yes'/></video>
      <memballoon model='virtio'/>
    </devices></domain>"""
    assert devices.unmodeled(ET.fromstring(plain)) == ()
    assert devices.unmodeled(ET.fromstring("<domain type='kvm'><name>bare</name></domain>")) == ()


def spec(**fields) -> DomainSpec:
    base = dict(name="hand", memory=524288, vcpus=1, origin=Origin("hand.yaml"), graphics=Graphics(),
                console=Console(log="/var/log/hand.log"))
    return DomainSpec(**{**base, **fields})


def test_an_update_keeps_every_device_no_spec_field_describes():
    before = devices.unmodeled(ET.fromstring(HAND_MADE))
    # Memory, graphics and console all change: the first graphics and serial port are
    # replaced, and everything the spec does not describe stays, in its order.
    after = ET.fromstring(domxml.domain_xml(spec(), Ownership(project="p"), current=HAND_MADE))
    kept = devices.unmodeled(after)
    assert [d.xml for d in kept] == [d.xml for d in before]
    essence = domxml.essence_of_element(after, {})
    assert essence["memory"] == 524288
    assert essence["graphics"] == {"type": "vnc", "listen": None, "port": "auto"}
    assert essence["console"] == {"type": "pty", "log": "/var/log/hand.log"}
    assert [g.get("type") for g in after.find("devices").findall("graphics")] == ["vnc", "spice"]


def test_a_spec_without_graphics_removes_them_all():
    after = ET.fromstring(domxml.domain_xml(spec(graphics=None), Ownership(project="p"), current=HAND_MADE))
    assert after.find("devices").findall("graphics") == []


def observed_with(*unmodeled: UnmodeledDevice, owner: Ownership | None = None) -> Observed:
    wanted = spec(console=None, graphics=None)
    return Observed(uri="test:///plain", domains={"hand": ObservedDomain(
        "hand", "00000000-0000-0000-0000-000000000001", False, {**wanted.essence(), "autostart": False},
        owner, unmodeled=unmodeled)})


def test_the_plan_names_them_in_a_note_that_is_no_change_and_no_resource(tmp_path):
    from reconcile import spec as specs

    (tmp_path / "a.yaml").write_text("project: p\ndomains:\n  - {name: hand, memory: 512MiB, state: stopped}\n")
    desired = specs.load([str(tmp_path)])
    sound = UnmodeledDevice("sound", '<sound model="ich9" />')
    the_plan = planner.plan(desired, observed_with(sound, owner=Ownership(project="p")))
    assert the_plan.empty
    note = next(n for n in the_plan.notes if n.kind is NoteKind.UNMODELED)
    assert note.devices == ('<sound model="ich9" />',)
    assert '= domain hand: not managed, kept as it is (the spec language does not describe it): <sound model="ich9" />' \
        in plan_text(the_plan)
    assert plan_summary(the_plan).startswith("No changes. The host matches the specs (1 resource checked).")
    doc = plan_json(the_plan)
    assert {"kind": "unmodeled", "devices": ['<sound model="ich9" />']}.items() <= next(
        n for n in doc["notes"] if n["kind"] == "unmodeled").items()
    # Without such devices there is no such note.
    assert not [n for n in planner.plan(desired, observed_with(owner=Ownership(project="p"))).notes
                if n.kind is NoteKind.UNMODELED]
