"""Data safety on the real daemon, each as a user met it: overlays on a qcow2 image imported
into a pool that already exists, a volume another project's domain uses, an import cut
short, prunes that would have emptied a lab, and a pruned domain's own stop timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import DOMAIN_TYPE, REPO, run_cli, write
from .test_disks import Served, qemu_img_info

pytestmark = pytest.mark.libvirtd


def overlay_spec(lab, source: Path) -> str:
    """The spec of the report: a qcow2 base imported, an overlay of no size on it, two more
    volumes and a seed, all in one pool that exists before the apply."""
    return f"""
        images: [{{name: {lab.name}-base.qcow2, pool: {lab.pool}, source: {source}}}]
        domains:
          - name: {lab.dom('a')}
            type: {DOMAIN_TYPE}
            memory: 64MiB
            state: stopped
            interfaces: []
            disks:
              - {{pool: {lab.pool}, backing: {lab.name}-base.qcow2}}
              - {{pool: {lab.pool}, name: {lab.dom('a')}-data.qcow2, size: 64MiB}}
              - {{pool: {lab.pool}, name: {lab.dom('a')}-scratch.qcow2, size: 64MiB}}
            cloud_init: {{user_data: {{runcmd: [[echo, hi]]}}}}
        """


def test_overlays_on_a_qcow2_image_imported_into_an_existing_pool(lab, tmp_path):
    source = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(source), "64M"], check=True)
    lab.cli("apply", check=0)  # the pool alone: it exists before the image is imported
    lab.spec("a.yaml", overlay_spec(lab, source))
    overlay = lab.pool_path / f"{lab.dom('a')}-vda.qcow2"
    base = lab.pool_path / f"{lab.name}-base.qcow2"
    for _ in range(4):
        lab.cli("apply", check=0)
        info = qemu_img_info(overlay)
        assert (info["format"], info["backing-filename"]) == ("qcow2", str(base))
        assert info["backing-filename-format"] == "qcow2", info
        assert info["virtual-size"] == 64 * 1024 * 1024, info  # the base's virtual size, not its file size
        lab.cli("plan", "--detailed-exitcode", check=0)
        lab.cli("destroy", check=0)
        lab.conn.storagePoolLookupByName(lab.pool).storageVolLookupByName(base.name).delete(0)

    # An overlay that reads its qcow2 base as raw, made by hand: the plan says so and fails.
    lab.cli("apply", check=0)
    overlay.unlink()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(overlay)], check=True)
    plan = lab.cli("plan", "--detailed-exitcode")
    assert plan.returncode == 1, plan.stdout + plan.stderr
    assert (f"! refuse domain {lab.dom('a')}: disk vda: volume {lab.pool}/{overlay.name} reads its base {base} as "
            "raw, but the base is a qcow2 image") in plan.stdout, plan.stdout
    assert "set allow_replace: true on the disk, or apply --allow-recreate" in plan.stdout
    lab.cli("apply", "--allow-recreate", check=0)
    assert qemu_img_info(overlay)["backing-filename-format"] == "qcow2"
    lab.cli("plan", "--detailed-exitcode", check=0)


def project_dir(tmp_path: Path, lab, project: str) -> Path:
    write(tmp_path / project / "d.yaml", f"""
        project: {lab.name}-{project}
        domains:
          - name: {lab.dom(project)}
            type: {DOMAIN_TYPE}
            memory: 64MiB
            state: stopped
            interfaces: []
            disks: [{{pool: {lab.pool}, name: {lab.name}-shared.qcow2, size: 30MiB}}]
        """)
    return tmp_path / project


def test_a_volume_another_domain_uses_is_neither_attached_nor_deleted(lab, tmp_path):
    lab.cli("apply", check=0)  # the pool
    c1, c2 = project_dir(tmp_path, lab, "c1"), project_dir(tmp_path, lab, "c2")
    run_cli("apply", str(c1), check=0)
    attach = run_cli("apply", str(c2))
    assert attach.returncode == 1
    assert (f"volume {lab.pool}/{lab.name}-shared.qcow2 is already a disk of domain {lab.dom('c1')}; two guests "
            "writing one disk corrupt it") in attach.stdout, attach.stdout
    assert lab.dom("c2") not in lab.domain_names()

    # A domain made by hand that uses c1's volume (as c2's was, silently, before): destroying
    # c1 removes c1's domain and keeps the volume, naming the domain that has it.
    vol = lab.conn.storagePoolLookupByName(lab.pool).storageVolLookupByName(f"{lab.name}-shared.qcow2")
    root = ET.fromstring(f"<domain type='{DOMAIN_TYPE}'><name>{lab.dom('byhand')}</name><memory unit='MiB'>64</memory>"
                         "<os><type>hvm</type></os><devices><disk type='file' device='disk'>"
                         "<driver name='qemu' type='qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>")
    ET.SubElement(root.find("devices/disk"), "source", {"file": vol.path()})
    lab.conn.defineXML(ET.tostring(root, encoding="unicode"))
    gone = run_cli("destroy", str(c1))
    assert gone.returncode == 1, gone.stdout + gone.stderr
    assert f"but now also a disk of domain {lab.dom('byhand')}; not deleted" in gone.stdout, gone.stdout
    assert lab.dom("c1") not in lab.domain_names()
    assert f"{lab.name}-shared.qcow2" in lab.volume_names()


def test_a_raw_import_cut_short_is_redone_never_used(lab, tmp_path):
    src = tmp_path / "www" / "big.raw"
    src.parent.mkdir()
    with open(src, "wb") as f:
        f.write(os.urandom(4096))
        f.seek(200 * 1024 * 1024 - 4096)
        f.write(os.urandom(4096))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    image = lab.pool_path / f"{lab.name}-big.img"
    with Served(tmp_path / "www", stall_after=src.stat().st_size // 4) as www:
        lab.spec("img.yaml", f"""
            images: [{{name: {image.name}, pool: {lab.pool}, source: "{www.url('big.raw')}", format: raw, sha256: {digest}}}]
            """)
        proc = subprocess.Popen([sys.executable, "-m", "reconcile", "apply", str(lab.specs)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while not (image.exists() and image.stat().st_size > 32 * 1024 * 1024):
                assert time.monotonic() < deadline and proc.poll() is None, "the import never got under way"
                time.sleep(0.1)
        finally:
            proc.kill()
            proc.wait()
    plan = lab.cli("plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr  # to do, never "No changes"
    assert f"+ create image {lab.pool}/{image.name}  (an earlier import never finished" in plan.stdout, plan.stdout
    with Served(tmp_path / "www") as again:
        (lab.specs / "img.yaml").write_text((lab.specs / "img.yaml").read_text().replace(www.url("big.raw"),
                                                                                          again.url("big.raw")))
        done = lab.cli("apply", check=0)
    assert "sha256 verified; the unfinished earlier import was removed first" in done.stdout, done.stdout
    assert hashlib.sha256(image.read_bytes()).hexdigest() == digest
    lab.cli("plan", "--detailed-exitcode", check=0)


def test_prune_never_empties_a_lab_by_accident(lab, tmp_path):
    lab.spec("a.yaml", f"""
        domains:
          - {{name: {lab.dom('a')}, type: {DOMAIN_TYPE}, memory: 64MiB, state: stopped}}
        """)
    lab.spec("b.yaml", f"""
        domains:
          - {{name: {lab.dom('b')}, type: {DOMAIN_TYPE}, memory: 64MiB, state: stopped}}
        """)
    lab.cli("apply", check=0)

    # Only the file a.yaml given: b.yaml's domain is not pruned (the project is the same).
    one = run_cli("plan", "--prune", "--project", lab.name, str(lab.specs / "a.yaml"), str(lab.specs / "pool.yaml"),
                  check=0)
    assert f"- destroy domain {lab.dom('b')}" not in one.stdout, one.stdout
    assert f"= domain {lab.dom('b')}: orphaned: no spec mentions it, but it was made from" in one.stdout, one.stdout

    # --project that disagrees with the files: an error, not a silent override.
    typo = run_cli("plan", "--prune", "--project", f"{lab.name}-typo", str(lab.specs))
    assert typo.returncode == 1
    assert f"the file says project '{lab.name}', but --project says '{lab.name}-typo'" in typo.stderr, typo.stderr

    # The directory loses its domains: left with a file of only `project:` (and its pool),
    # then also only defaults, then also `domains: []`.
    (lab.specs / "a.yaml").unlink()
    (lab.specs / "b.yaml").unlink()
    for name, text in (("pool.yaml", None), ("_defaults.yaml", f"project: {lab.name}\ndefaults: {{memory: 64MiB}}\n"),
                       ("empty.yaml", "domains: []\n")):
        if text is not None:
            write(lab.specs / name, text)
        refused = lab.cli("apply", "--prune")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"--prune would remove every domain of project '{lab.name}' on this host" in refused.stdout, refused.stdout
        assert {lab.dom("a"), lab.dom("b")} <= lab.domain_names()
    lab.cli("apply", "--prune", "--prune-all", check=0)
    assert not lab.domain_names()


def test_a_pruned_domain_stops_as_its_spec_said(lab):
    """A running domain that boots nothing never answers the power button: with the default
    timeout its prune would wait a minute before forcing it off."""
    lab.spec("a.yaml", f"""
        domains:
          - {{name: {lab.dom('keep')}, type: {DOMAIN_TYPE}, memory: 64MiB, state: stopped}}
          - {{name: {lab.dom('quick')}, type: {DOMAIN_TYPE}, memory: 64MiB, stop_timeout: 0}}
        """)
    lab.cli("apply", check=0)
    lab.spec("a.yaml", f"""
        domains:
          - {{name: {lab.dom('keep')}, type: {DOMAIN_TYPE}, memory: 64MiB, state: stopped}}
        """)
    done = lab.cli("apply", "--prune", "-o", "json", check=0)
    stops = [r for r in json.loads(done.stdout)["results"] if r["action"] == "stop"]
    assert [(r["name"], r["outcome"]) for r in stops] == [(lab.dom("quick"), "forced")]
    assert stops[0]["message"] == "forced: powered off at once (stop_timeout is 0)"
    assert lab.domain_names() == {lab.dom("keep")}
