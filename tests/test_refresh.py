"""Newest base images on the real daemon: `rebuild` checks a refreshed image's source,
imports a changed one as a new version beside the old, builds the rebuilt overlays on it,
keeps the old version while another project's overlay is built on it, and deletes it once
nothing is. No guest boots: the domains stay stopped."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest

from .conftest import DOMAIN_TYPE, REPO, run_cli, write
from .test_disks import Served, make_base, qemu_img_info

pytestmark = pytest.mark.libvirtd


def _domain(name: str, pool: str, image: str, indent: int = 10) -> str:
    """A stopped domain with one overlay, as an item of `domains:` indented by `indent`."""
    pad = " " * indent
    return "\n" + "".join(f"{pad}{line}\n" for line in (
        f"- name: {name}", f"  type: {DOMAIN_TYPE}", "  memory: 64MiB", "  state: stopped", "  stop_timeout: 0",
        f"  disks: [{{pool: {pool}, backing: {image}}}]"))


def _json(proc: subprocess.CompletedProcess) -> dict:
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, json.loads((REPO / "schemas" / "plan.schema.json").read_text()))
    return doc


def _results(doc: dict) -> dict[str, tuple[str, str]]:
    return {f"{r['action']} {r['resource']} {r['name']}": (r["status"], r["message"]) for r in doc["results"]}


def _notes(doc: dict) -> list[str]:
    return [f"{n['resource']} {n['name']}: {n['message']}" for n in doc["notes"]]


def test_refreshed_file_image_gets_a_new_version_and_the_old_lives_while_used(lab, tmp_path):
    src = tmp_path / "src" / "base.qcow2"
    make_base(src)
    image = f"{lab.name}-base.qcow2"
    a, b = lab.dom("a"), lab.dom("b")
    lab.spec("lab.yaml", f"""
        images:
          - {{name: {image}, pool: {lab.pool}, source: {src}, refresh: true}}
        domains:{_domain(a, lab.pool, image)}
        """)
    # A second project on the same host, with an overlay on the same image.
    other = tmp_path / "other"
    write(other / "other.yaml", f"""
        project: {lab.name}-other
        images:
          - {{name: {image}, pool: {lab.pool}, source: {src}}}
        domains:{_domain(b, lab.pool, image)}
        """)
    lab.cli("apply", check=0)
    run_cli("apply", str(other), check=0)
    first = lab.pool_path / image
    record = lab.pool_path / f"{image}.reconcile.json"
    assert json.loads(record.read_text())["current"] == image

    # Nothing changed: nothing is uploaded, the overlay is made anew on the same base.
    same = _json(lab.cli("rebuild", "-o", "json", check=0))
    assert not [r for r in same["results"] if r["resource"] == "image"]
    assert any("source unchanged" in n for n in _notes(same)), _notes(same)
    assert qemu_img_info(lab.pool_path / f"{a}-vda.qcow2")["backing-filename"] == str(first)

    # The source changes: the next rebuild imports it as a new version and rebases a's overlay.
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x77 0 64k", str(src)], check=True, capture_output=True)
    changed = _json(lab.cli("rebuild", "-o", "json", check=0))
    results = _results(changed)
    status, message = results[f"create image {lab.pool}/{image}"]
    assert status == "applied" and "bytes" in message
    version = json.loads(record.read_text())["current"]
    assert version.startswith(image + ".") and len(version) == len(image) + 13
    new = lab.pool_path / version
    assert qemu_img_info(lab.pool_path / f"{a}-vda.qcow2")["backing-filename"] == str(new)
    assert qemu_img_info(lab.pool_path / f"{b}-vda.qcow2")["backing-filename"] == str(first)
    assert first.exists(), "the other project's overlay is still built on the first version"
    assert any(f"{image}, kept: volume {lab.pool}/{b}-vda.qcow2 is built on it" in n for n in _notes(changed))
    # both projects converge: the other's overlay on the earlier version is as it should be
    lab.cli("plan", "--detailed-exitcode", check=0)
    run_cli("plan", str(other), "--detailed-exitcode", check=0)

    # A new domain of either project is built on the current version.
    c = lab.dom("c")
    lab.spec("more.yaml", f"""
        domains:{_domain(c, lab.pool, image)}
        """)
    lab.cli("apply", check=0)
    assert qemu_img_info(lab.pool_path / f"{c}-vda.qcow2")["backing-filename"] == str(new)

    # The other project rebuilds with --refresh-images: its source is the same file, already
    # imported as the current version, so nothing is uploaded; b moves to it, and the first
    # version, on which nothing is built any more, is deleted.
    moved = _json(run_cli("rebuild", str(other), "--refresh-images", "-o", "json", check=0))
    results = _results(moved)
    assert f"create image {lab.pool}/{image}" not in results
    assert results[f"destroy image {lab.pool}/{image}"][0] == "applied"
    assert qemu_img_info(lab.pool_path / f"{b}-vda.qcow2")["backing-filename"] == str(new)
    assert not first.exists()
    assert new.exists()
    lab.cli("plan", "--detailed-exitcode", check=0)
    run_cli("plan", str(other), "--detailed-exitcode", check=0)


def test_refreshed_url_image_is_checked_without_downloading(lab, tmp_path):
    www = tmp_path / "www"
    src = www / "cloud.qcow2"
    make_base(src)
    image = f"{lab.name}-cloud.qcow2"
    a = lab.dom("u")
    with Served(www) as served:
        lab.spec("lab.yaml", f"""
            images:
              - {{name: {image}, pool: {lab.pool}, source: "{served.url('cloud.qcow2')}", refresh: true}}
            domains:{_domain(a, lab.pool, image, 14)}
            """)
        lab.cli("apply", check=0)
        assert served.gets == 1

        same = _json(lab.cli("rebuild", "-o", "json", check=0))
        assert served.gets == 1 and served.heads == 1  # asked, not downloaded
        assert any("source unchanged (Last-Modified" in n for n in _notes(same)), _notes(same)

        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x77 0 64k", str(src)], check=True,
                       capture_output=True)
        later = src.stat().st_mtime + 10  # Last-Modified has a resolution of a second
        os.utime(src, (later, later))
        changed = _json(lab.cli("rebuild", "-o", "json", check=0))
        assert served.gets == 2
        assert _results(changed)[f"create image {lab.pool}/{image}"][0] == "applied"
        version = json.loads((lab.pool_path / f"{image}.reconcile.json").read_text())["current"]
        assert qemu_img_info(lab.pool_path / f"{a}-vda.qcow2")["backing-filename"] == str(lab.pool_path / version)
        # nothing else is built on the first version: it is gone
        assert not (lab.pool_path / image).exists()
        lab.cli("plan", "--detailed-exitcode", check=0)


def test_an_unreadable_source_is_named_and_the_rebuild_goes_on(lab, tmp_path):
    src = tmp_path / "src" / "base.qcow2"
    make_base(src)
    image = f"{lab.name}-gone.qcow2"
    a = lab.dom("g")
    lab.spec("lab.yaml", f"""
        images:
          - {{name: {image}, pool: {lab.pool}, source: {src}, refresh: true}}
        domains:{_domain(a, lab.pool, image)}
        """)
    lab.cli("apply", check=0)
    Path(src).unlink()
    out = lab.cli("rebuild")
    assert out.returncode == 1
    assert "Traceback" not in out.stdout + out.stderr
    assert f"not refreshed: read {src}: No such file or directory" in out.stdout
    assert qemu_img_info(lab.pool_path / f"{a}-vda.qcow2")["backing-filename"] == str(lab.pool_path / image)
