"""Crash safety: an apply or a destroy killed with SIGKILL at any point is finished by the
next run, on the real daemon.

Each round kills `apply` at one more point of its work (see tests/kill_at.py: the start and
the end of every call that changes the host, counted across worker threads), runs `apply`
again and checks the host: every domain once, running, with its volume; every volume in
the pool recorded as owned by its domain; no "already exists"; a plan with nothing to do.
Then the same for `destroy` (the pool it made goes too), for `rebuild` (finished by the next `rebuild` or, in turn,
by an `apply`), and for a rebuild that imports a changed image as a new version. The killed run also leaves its lock behind, which the next run must
recognise as stale.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from reconcile.codec import ownership

from .conftest import DOMAIN_TYPE, REPO, cleanup_host

pytestmark = pytest.mark.libvirtd

DOMAINS = 3
# 1 pool + 3 x (define, volume, start) calls for apply; 3 x (stop, volume, undefine) and the
# pool's removal for destroy; two points each.
APPLY_POINTS = 2 * (1 + 3 * DOMAINS)
DESTROY_POINTS = 2 * (3 * DOMAINS + 1)


def kill_at(point: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.kill_at", str(point), *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300, env={"LIBVIRT_DEFAULT_URI": "qemu:///system",
                                                                "PATH": "/usr/bin:/bin"})


def owned_volumes(conn, prefix: str) -> dict[str, set[str]]:
    out = {}
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(prefix):
            own = ownership.read_ownership(ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
            out[dom.name()] = {v.name for v in own.volumes} if own else set()
    return out


def test_killed_anywhere_the_next_run_converges(lab):
    names = [lab.dom(f"c{i}") for i in range(DOMAINS)]
    lab.spec("crash.yaml", "domains:\n" + "".join(f"""
          - name: {n}
            type: {DOMAIN_TYPE}
            memory: 64MiB
            stop_timeout: 0
            disks: [{{pool: {lab.pool}, size: 16MiB}}]
        """.replace("\n        ", "\n") for n in names))
    specs = str(lab.specs)
    for point in range(APPLY_POINTS):
        cleanup_host(lab.conn, prefix=lab.name)  # the pool too: its creation is a point as well
        killed = kill_at(point, "apply", specs)
        assert killed.returncode == -9, f"point {point} was not reached:\n{killed.stdout}\n{killed.stderr}"

        again = lab.cli("apply")
        context = f"apply killed at point {point}:\n{again.stdout}\n{again.stderr}"
        assert again.returncode == 0, context
        assert "already exists" not in again.stdout + again.stderr, context
        assert "Traceback" not in again.stderr, context
        assert lab.domain_names() == set(names), context
        assert all(lab.conn.lookupByName(n).isActive() for n in names), context
        assert lab.volume_names() == {f"{n}-vda.qcow2" for n in names}, context
        assert owned_volumes(lab.conn, lab.name) == {n: {f"{n}-vda.qcow2"} for n in names}, context
        lab.cli("plan", "--detailed-exitcode", check=0)

        point_d = (point * 7) % DESTROY_POINTS  # spread over every point of destroy too
        killed = kill_at(point_d, "destroy", "--force", specs)
        assert killed.returncode == -9, f"destroy point {point_d} was not reached:\n{killed.stdout}\n{killed.stderr}"
        again = lab.cli("destroy", "--force")
        context = f"destroy killed at point {point_d}:\n{again.stdout}\n{again.stderr}"
        assert again.returncode == 0, context
        assert lab.domain_names() == set(), context
        assert not lab.pool_exists(), context  # reconcile made it, and it is empty
        assert "No changes." in lab.cli("destroy", check=0).stdout


# Per domain: mark, stop, two disks (delete + create each), seed, redefine, start: 9 calls.
REBUILD_POINTS = 2 * 9 * DOMAINS


def reset_state(conn, names: list[str]) -> dict[str, tuple[int, object]]:
    out = {}
    for n in names:
        own = ownership.read_ownership(ET.fromstring(conn.lookupByName(n).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
        out[n] = (own.rebuilds, own.reset)
    return out


def test_a_rebuild_killed_anywhere_is_finished_by_the_next_rebuild_or_apply(lab):
    names = [lab.dom(f"r{i}") for i in range(DOMAINS)]
    lab.spec("images.yaml", f"""
        images:
          - {{name: {lab.name}-base.qcow2, pool: {lab.pool}, source: {lab.pool_path.parent / (lab.name + '-base.qcow2')}}}
        """)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(lab.pool_path.parent / f"{lab.name}-base.qcow2"),
                    "16M"], check=True)
    lab.spec("rebuild.yaml", "domains:\n" + "".join(f"""
          - name: {n}
            type: {DOMAIN_TYPE}
            memory: 64MiB
            stop_timeout: 0
            disks:
              - {{pool: {lab.pool}, backing: {lab.name}-base.qcow2}}
              - {{pool: {lab.pool}, name: {n}-data.qcow2, size: 8MiB, keep: true}}
              - {{pool: {lab.pool}, name: {n}-scratch.qcow2, size: 8MiB, rebuild: recreate}}
            cloud_init: {{user_data: {{hostname: {n}}}}}
        """.replace("\n        ", "\n") for n in names))
    lab.cli("apply", check=0)
    uuids = {n: lab.conn.lookupByName(n).UUIDString() for n in names}
    volumes = {f"{n}-{v}" for n in names for v in ("vda.qcow2", "data.qcow2", "scratch.qcow2", "cidata.iso")}
    volumes |= {f"{lab.name}-base.qcow2", f"{lab.name}-base.qcow2.reconcile.json"}
    generation = 0
    # Every fourth point and the last, each run finished alternately by rebuild and by apply.
    for round_, point in enumerate(sorted(set(range(0, REBUILD_POINTS, 4)) | {REBUILD_POINTS - 1})):
        killed = kill_at(point, "rebuild", str(lab.specs))
        assert killed.returncode == -9, f"rebuild point {point} was not reached:\n{killed.stdout}\n{killed.stderr}"
        finisher = "rebuild" if round_ % 2 == 0 else "apply"
        again = lab.cli(finisher)
        context = f"rebuild killed at point {point}, finished by {finisher}:\n{again.stdout}\n{again.stderr}"
        assert again.returncode == 0, context
        assert "Traceback" not in again.stderr, context
        assert lab.domain_names() == set(names), context
        assert all(lab.conn.lookupByName(n).isActive() for n in names), context
        assert {n: lab.conn.lookupByName(n).UUIDString() for n in names} == uuids, context
        assert lab.volume_names() == volumes, context
        state = reset_state(lab.conn, names)
        # No reset is left half-done; a finished one's mark may outlive a start cut short
        # just after it (the domain runs: the mark only ever meant "start it again").
        assert all(mark is None or mark.generation == count for count, mark in state.values()), (state, context)
        counts = {count for count, _ in state.values()}
        # each run either finished the killed rebuild or made a new one; never went back
        assert min(counts) > generation or finisher == "apply", (state, generation, context)
        generation = min(counts)
        plan = lab.cli("plan", "--detailed-exitcode")
        assert plan.returncode == 0, context + plan.stdout


def _backing(path) -> str | None:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout).get("backing-filename")


def test_a_refresh_killed_anywhere_never_leaves_an_overlay_without_its_base(lab):
    """Each round changes the image's source and kills `rebuild --refresh-images` at one
    point of its work (the new version's upload, its record, the resets, the old version's
    deletion); the next run finishes it. Never an overlay whose base is gone, never a
    version left that nothing needs once a rebuild has finished."""
    names = [lab.dom(f"v{i}") for i in range(2)]
    src = lab.pool_path.parent / f"{lab.name}-src.qcow2"
    image = f"{lab.name}-img.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "16M"], check=True)
    lab.spec("refresh.yaml", f"images:\n  - {{name: {image}, pool: {lab.pool}, source: {src}, refresh: true}}\n"
             "domains:\n" + "".join(f"  - {{name: {n}, type: {DOMAIN_TYPE}, memory: 64MiB, state: stopped, "
                                    f"disks: [{{pool: {lab.pool}, backing: {image}}}]}}\n" for n in names))
    lab.cli("apply", check=0)
    overlays = [lab.pool_path / f"{n}-vda.qcow2" for n in names]
    # the new version listed in the record, its upload, the record; then per domain mark,
    # delete and create, record done; the old version's deletion
    points = 2 * (3 + 4 * len(names) + 1)
    for round_, point in enumerate(range(points)):
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {round_ + 1} 0 64k", str(src)], check=True,
                       capture_output=True)
        killed = kill_at(point, "rebuild", str(lab.specs), "-o", "json")
        assert killed.returncode == -9, f"refresh point {point} was not reached:\n{killed.stdout}\n{killed.stderr}"
        # One being made anew may be missing, or (libvirtd finishes a create the killed run
        # asked for) not yet written: its domain's mark says so. One that names a base has it.
        for overlay in overlays:
            base = _backing(overlay) if overlay.exists() else None
            if base is not None:
                assert Path(base).exists(), f"point {point}: {overlay.name} lost its base"
        finisher = "rebuild" if round_ % 2 == 0 else "apply"
        again = lab.cli(finisher)
        context = f"refresh killed at point {point}, finished by {finisher}:\n{again.stdout}\n{again.stderr}"
        assert again.returncode == 0, context
        assert "Traceback" not in again.stderr, context
        bases = {_backing(o) for o in overlays}
        assert all(Path(b).exists() for b in bases), context
        versions = {v for v in lab.volume_names() if v.startswith(image) and not v.endswith(".reconcile.json")}
        current = json.loads((lab.pool_path / f"{image}.reconcile.json").read_text())["current"]
        assert current in versions, context
        if finisher == "rebuild":
            # finished: every overlay on the newest version, and nothing else kept
            assert bases == {str(lab.pool_path / current)}, context
            assert versions == {current}, context
        lab.cli("plan", "--detailed-exitcode", check=0)
