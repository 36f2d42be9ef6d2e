"""A real guest on the real daemon: it boots, says so on its serial console, and answers
(or, in its second variant, ignores) the ACPI power button.

The guest is built by tests/guest/build from Debian packages and cached. Guests that boot
use domain type `qemu`: with `kvm`, syslinux hits an emulation failure on nested hosts.
Everything here reads the console log that the spec's `console: {log: ...}` asks for.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from .conftest import wait_for_console

pytestmark = pytest.mark.libvirtd

BOOT_TYPE = "qemu"


def upload_volume(conn, pool_name: str, name: str, image: Path) -> None:
    """Put `image` into a pool as a raw volume."""
    pool = conn.storagePoolLookupByName(pool_name)
    size = image.stat().st_size
    vol_el = ET.Element("volume")
    ET.SubElement(vol_el, "name").text = name
    ET.SubElement(vol_el, "capacity", {"unit": "bytes"}).text = str(size)
    ET.SubElement(ET.SubElement(vol_el, "target"), "format", {"type": "raw"})
    vol = pool.createXML(ET.tostring(vol_el, encoding="unicode"), 0)
    stream = conn.newStream(0)
    vol.upload(stream, 0, size, 0)
    with open(image, "rb") as f:
        stream.sendAll(lambda _st, n, fh: fh.read(n), f)
    stream.finish()


def guest_spec(lab, suffix: str, volume: str, state: str = "running", stop_timeout: int = 60) -> str:
    return f"""
          - name: {lab.dom(suffix)}
            type: {BOOT_TYPE}
            memory: 128MiB
            disks: [{{pool: {lab.pool}, name: {volume}, format: raw, size: 32MiB}}]
            console: {{log: {lab.console_log(suffix)}}}
            state: {state}
            stop_timeout: {stop_timeout}
    """


def results_by_name(proc) -> dict[str, dict]:
    doc = json.loads(proc.stdout)
    actions = {a["id"]: a for a in doc["actions"]}
    return {actions[r["id"]]["name"]: r for r in doc["results"] if actions[r["id"]]["action"] == "stop"}


def test_guest_boots_and_answers_or_ignores_the_power_button(lab, guest_images):
    lab.cli("apply", check=0)  # the lab's pool
    upload_volume(lab.conn, lab.pool, f"{lab.name}-acpi.img", guest_images["acpi"])
    upload_volume(lab.conn, lab.pool, f"{lab.name}-deaf.img", guest_images["acpi-ignore"])

    def write_specs(state: str) -> None:
        lab.spec("guests.yaml", "domains:\n"
                 + guest_spec(lab, "acpi", f"{lab.name}-acpi.img", state, stop_timeout=120)
                 + guest_spec(lab, "deaf", f"{lab.name}-deaf.img", state, stop_timeout=10))

    write_specs("running")
    lab.cli("apply", check=0)  # both guests boot at once
    for suffix in ("acpi", "deaf"):
        log = wait_for_console(lab.console_log(suffix), "rcguest: ready")
        assert "rcguest: booted" in log
        assert "rcguest: root disk: vda root-boots: 1" in log, log

    # The console, with the pty libvirt allocated and the target it filled in, is no change.
    plan = lab.cli("plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    xml = lab.conn.lookupByName(lab.dom("acpi")).XMLDesc(0)
    assert f"<log file='{lab.console_log('acpi')}' append='off'/>" in xml

    write_specs("stopped")
    stopped = lab.cli("apply", "-o", "json", check=0)
    by_name = results_by_name(stopped)
    graceful, forced = by_name[lab.dom("acpi")], by_name[lab.dom("deaf")]
    assert (graceful["status"], graceful["message"]) == ("applied", "graceful"), graceful
    assert graceful["duration"] < 60, graceful  # the guest powers off within seconds; the timeout is 120
    assert (forced["status"], forced["message"]) == ("applied", "forced"), forced
    assert forced["duration"] >= 10, forced

    assert "rcguest: power button: powering off" in lab.console_log("acpi").read_text()
    assert "rcguest: power button: ignored" in lab.console_log("deaf").read_text()
    for suffix in ("acpi", "deaf"):
        assert not lab.conn.lookupByName(lab.dom(suffix)).isActive()
