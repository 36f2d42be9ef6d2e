"""Disks for real labs, end to end on qemu:///system through the command line.

Base images imported from a file and from an http URL served here, overlays checked with
qemu-img, growth in place and shrink refused, the cloud-init seed read back from the pool
and compared with the spec, a kept disk that survives destroy, and second applies that do
nothing at all: no download, no upload, no seed rebuilt.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import libvirt
import pytest
import yaml

from reconcile.codec import seed

from .conftest import DOMAIN_TYPE, REPO

pytestmark = pytest.mark.libvirtd


def make_base(path: Path, size: str = "32M") -> str:
    """A small qcow2 base image with a few bytes of content; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64k", str(path)], check=True, capture_output=True)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def qemu_img_info(path: Path) -> dict:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def stat_of(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


class Served:
    """A directory served over http on 127.0.0.1 by a thread; counts the GETs (and HEADs)
    it answers.

    With `stall_after`, a download sends that many bytes and then waits (at most a minute)
    until `release` is set, the way a slow mirror does.
    """

    def __init__(self, root: Path, stall_after: int | None = None):
        self.gets = 0
        self.heads = 0
        self.auth: list[str | None] = []
        self.release = threading.Event()
        served = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):  # noqa: N802 (the http.server name)
                served.gets += 1
                served.auth.append(self.headers.get("Authorization"))
                if stall_after is None:
                    return super().do_GET()
                data = (root / self.path.lstrip("/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:stall_after])
                self.wfile.flush()
                served.release.wait(60)

            def do_HEAD(self):  # noqa: N802
                served.heads += 1
                return super().do_HEAD()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name: str, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.server.server_address[1]}/{name}"

    def __enter__(self) -> Served:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_overlay_on_imported_image_and_second_apply_does_nothing(lab, tmp_path):
    digest = make_base(tmp_path / "src" / "base.qcow2")
    name = lab.dom("ov")
    lab.spec("ov.yaml", f"""
        images:
          - name: {lab.name}-base.qcow2
            pool: {lab.pool}
            source: {tmp_path}/src/base.qcow2
            sha256: {digest}
        domains:
          - name: {name}
            type: {DOMAIN_TYPE}
            memory: 128MiB
            stop_timeout: 0
            disks:
              - {{pool: {lab.pool}, backing: {lab.name}-base.qcow2, size: 96MiB}}
              - {{pool: {lab.pool}, backing: {lab.name}-base.qcow2}}
        """)
    first = lab.cli("apply", check=0)
    assert f"+ create image {lab.pool}/{lab.name}-base.qcow2" in first.stdout
    assert "sha256 verified" in first.stdout

    base = lab.pool_path / f"{lab.name}-base.qcow2"
    assert hashlib.sha256(base.read_bytes()).hexdigest() == digest
    info = qemu_img_info(lab.pool_path / f"{name}-vda.qcow2")
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(base)
    assert info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == 96 * 1024 * 1024  # larger than the 32 MiB base
    assert qemu_img_info(lab.pool_path / f"{name}-vdb.qcow2")["virtual-size"] == 32 * 1024 * 1024
    assert lab.conn.lookupByName(name).isActive()

    before = {p.name: stat_of(p) for p in lab.pool_path.iterdir()}
    second = lab.cli("apply", check=0)
    assert "No changes." in second.stdout, second.stdout
    assert "Recap: 0 applied," in second.stdout
    assert {p.name: stat_of(p) for p in lab.pool_path.iterdir()} == before  # nothing uploaded or rewritten


def test_import_from_http_happens_once(lab, tmp_path):
    digest = make_base(tmp_path / "www" / "cloud.qcow2", "16M")
    with Served(tmp_path / "www") as www:
        lab.spec("img.yaml", f"""
            images:
              - {{name: {lab.name}-cloud.qcow2, pool: {lab.pool}, source: "{www.url('cloud.qcow2', 'lab:pa55word@')}", sha256: {digest}}}
            """)
        planned = lab.cli("plan", "-o", "json", check=0)
        jsonschema.validate(json.loads(planned.stdout), json.loads((REPO / "schemas" / "plan.schema.json").read_text()))
        assert "pa55word" not in planned.stdout
        out = lab.cli("apply", check=0)
        assert f"imported from {www.url('cloud.qcow2', '(credentials)@')}" in out.stdout
        assert "pa55word" not in out.stdout + out.stderr
        assert www.gets == 1
        assert www.auth == ["Basic " + base64.b64encode(b"lab:pa55word").decode()]
        assert hashlib.sha256((lab.pool_path / f"{lab.name}-cloud.qcow2").read_bytes()).hexdigest() == digest

        again = lab.cli("apply", check=0)
        assert "No changes." in again.stdout
        assert www.gets == 1  # not downloaded again


def test_wrong_sha256_or_format_is_refused_and_leaves_nothing(lab, tmp_path):
    make_base(tmp_path / "www" / "cloud.qcow2", "16M")
    with Served(tmp_path / "www") as www:
        lab.spec("img.yaml", f"""
            images:
              - {{name: {lab.name}-bad.qcow2, pool: {lab.pool}, source: "{www.url('cloud.qcow2')}", sha256: "{'0' * 64}"}}
              - {{name: {lab.name}-raw.img, pool: {lab.pool}, source: {tmp_path}/www/cloud.qcow2, format: raw}}
            """)
        out = lab.cli("apply")
    assert out.returncode == 1
    assert "Traceback" not in out.stdout + out.stderr
    assert f"sha256 is {hashlib.sha256((tmp_path / 'www' / 'cloud.qcow2').read_bytes()).hexdigest()}, the spec says {'0' * 64}" in out.stdout
    assert "the source is a qcow2 image, the spec says raw" in out.stdout
    assert lab.volume_names() == set()
    assert not any(lab.pool_path.iterdir())


def test_import_cut_short_is_never_used_as_a_base_and_is_redone(lab, tmp_path):
    src = tmp_path / "www" / "cloud.qcow2"
    make_base(src, "64M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 1M 2M", str(src)], check=True, capture_output=True)
    image = lab.pool_path / f"{lab.name}-cloud.qcow2"
    with Served(tmp_path / "www", stall_after=src.stat().st_size // 2) as www:
        lab.spec("img.yaml", f"""
            images:
              - {{name: {lab.name}-cloud.qcow2, pool: {lab.pool}, source: "{www.url('cloud.qcow2')}"}}
            domains:
              - name: {lab.dom('cut')}
                type: {DOMAIN_TYPE}
                memory: 128MiB
                state: stopped
                disks: [{{pool: {lab.pool}, backing: {lab.name}-cloud.qcow2}}]
            """)
        apply = subprocess.Popen([sys.executable, "-m", "reconcile", "apply", str(lab.specs)], cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while not (image.exists() and image.stat().st_size > 1024 * 1024):
                assert time.monotonic() < deadline, "the import never started"
                assert apply.poll() is None, "apply ended before the download stalled"
                time.sleep(0.2)
        finally:
            apply.kill()  # as a power cut or `kill -9` would
            apply.wait()
    assert image.read_bytes().startswith(b"RECONCILE-IMPORT-UNFINISHED")
    plan = lab.cli("plan", check=0)
    assert (f"+ create image {lab.pool}/{lab.name}-cloud.qcow2  (an earlier import never finished"
            in plan.stdout), plan.stdout
    assert f"{lab.dom('cut')}-vda.qcow2" not in lab.volume_names()

    spec = (lab.specs / "img.yaml").read_text()
    with Served(tmp_path / "www") as again:
        (lab.specs / "img.yaml").write_text(spec.replace(www.url("cloud.qcow2"), again.url("cloud.qcow2")))
        out = lab.cli("apply", check=0)
    assert "the unfinished earlier import was removed first" in out.stdout, out.stdout
    assert image.read_bytes() == src.read_bytes()
    info = qemu_img_info(lab.pool_path / f"{lab.dom('cut')}-vda.qcow2")
    assert info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == 64 * 1024 * 1024


def test_grow_in_place_and_shrink_refused(lab):
    name = lab.dom("grow")
    spec = f"""
        domains:
          - name: {name}
            type: {DOMAIN_TYPE}
            memory: 128MiB
            stop_timeout: 0
            disks: [{{pool: {lab.pool}, size: 64MiB}}]
        """
    lab.spec("grow.yaml", spec)
    lab.cli("apply", check=0)
    volume = lab.pool_path / f"{name}-vda.qcow2"
    (lab.specs / "grow.yaml").write_text((lab.specs / "grow.yaml").read_text().replace("64MiB", "128MiB"))

    plan = lab.cli("plan", "--detailed-exitcode", check=2)
    assert f"~ update volume {lab.pool}/{name}-vda.qcow2  (disk vda of {name}: grow in place; live: the running guest sees the new size at once)" in plan.stdout
    assert "size: 64MiB -> 128MiB" in plan.stdout
    lab.cli("apply", check=0)
    assert qemu_img_info(volume)["virtual-size"] == 128 * 1024 * 1024
    dom = lab.conn.lookupByName(name)
    assert dom.blockInfo("vda")[0] == 128 * 1024 * 1024  # the running guest sees it
    lab.cli("plan", "--detailed-exitcode", check=0)

    (lab.specs / "grow.yaml").write_text((lab.specs / "grow.yaml").read_text().replace("128MiB", "32MiB"))
    refused = lab.cli("plan")
    assert refused.returncode == 1
    assert (f"! refuse domain {name}: disk vda: volume {lab.pool}/{name}-vda.qcow2 is 128MiB, the spec says 32MiB; "
            "shrinking a disk loses data, so it is refused (set size to at least 128MiB)") in refused.stdout
    applied = lab.cli("apply")
    assert applied.returncode == 1
    assert qemu_img_info(volume)["virtual-size"] == 128 * 1024 * 1024


def iso_files(path: Path) -> dict[str, bytes]:
    """The files of an ISO, read with isoinfo (Rock Ridge names), independent of pycdlib."""
    listing = subprocess.run(["isoinfo", "-R", "-f", "-i", str(path)], check=True, capture_output=True, text=True)
    out = {}
    for name in listing.stdout.split():
        out[name.lstrip("/")] = subprocess.run(["isoinfo", "-R", "-x", name, "-i", str(path)], check=True,
                                               capture_output=True).stdout
    return out


def test_cloud_init_seed_is_read_back_and_a_change_shows_without_secrets(lab, tmp_path):
    name = lab.dom("ci")
    (lab.specs / "net.yaml.txt").write_text("version: 2\nethernets:\n  eth0: {dhcp4: true}\n")
    spec = f"""
        domains:
          - name: {name}
            type: {DOMAIN_TYPE}
            memory: 128MiB
            stop_timeout: 0
            disks: [{{pool: {lab.pool}, size: 16MiB}}]
            cloud_init:
              user_data:
                users: [{{name: admin, passwd: s3cret-one}}]
                packages: [nginx]
              meta_data: {{local-hostname: web}}
              network_config: net.yaml.txt
        """
    lab.spec("ci.yaml", spec)
    lab.cli("apply", check=0)
    iso = lab.pool_path / f"{name}-cidata.iso"
    label = subprocess.run(["isoinfo", "-d", "-i", str(iso)], check=True, capture_output=True, text=True).stdout
    assert "Volume id: cidata" in label
    files = iso_files(iso)
    assert set(files) == {"user-data", "meta-data", "network-config"}
    assert files["user-data"].startswith(b"#cloud-config\n")
    assert yaml.safe_load(files["user-data"]) == {"users": [{"name": "admin", "passwd": "s3cret-one"}], "packages": ["nginx"]}
    meta = yaml.safe_load(files["meta-data"])
    assert meta["local-hostname"] == "web"
    first_id = meta["instance-id"]
    assert first_id.startswith(f"{name}-")
    assert files["network-config"] == (lab.specs / "net.yaml.txt").read_bytes()
    assert seed.read_iso(iso.read_bytes()) == files  # what reconcile reads back is what is there
    xml = lab.conn.lookupByName(name).XMLDesc(0)
    assert f"<source pool='{lab.pool}' volume='{name}-cidata.iso'" in xml

    before = stat_of(iso)
    assert "No changes." in lab.cli("apply", check=0).stdout
    assert stat_of(iso) == before  # not rebuilt, not uploaded

    (lab.specs / "ci.yaml").write_text((lab.specs / "ci.yaml").read_text().replace("s3cret-one", "s3cret-two"))
    plan = lab.cli("plan", "--detailed-exitcode", check=2)
    assert f"~ update volume {lab.pool}/{name}-cidata.iso  (cloud-init seed of {name} changed: rebuilt;" in plan.stdout
    assert "      user-data: sha256:" in plan.stdout
    assert f"      instance-id: {first_id} -> {name}-" in plan.stdout and "[next-boot]" in plan.stdout
    as_json = lab.cli("plan", "-o", "json", check=0)
    jsonschema.validate(json.loads(as_json.stdout), json.loads((REPO / "schemas" / "plan.schema.json").read_text()))
    for out in (plan.stdout, as_json.stdout, plan.stderr):
        assert "s3cret" not in out
    lab.cli("apply", check=0)
    files = iso_files(iso)
    assert yaml.safe_load(files["user-data"])["users"][0]["passwd"] == "s3cret-two"
    assert yaml.safe_load(files["meta-data"])["instance-id"] != first_id
    lab.cli("plan", "--detailed-exitcode", check=0)

    # Without cloud_init the seed is detached and, being derived data, deleted.
    text = (lab.specs / "ci.yaml").read_text()
    (lab.specs / "ci.yaml").write_text(text[:text.index("    cloud_init:")])
    lab.cli("apply", check=0)
    assert f"{name}-cidata.iso" not in lab.volume_names()
    assert "cidata" not in lab.conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)  # from the next boot on
    lab.cli("plan", "--detailed-exitcode", check=0)


def test_kept_disk_survives_destroy_and_is_attached_again(lab, tmp_path):
    digest = make_base(tmp_path / "base.qcow2", "16M")
    name = lab.dom("keep")
    lab.spec("keep.yaml", f"""
        images:
          - {{name: {lab.name}-base.qcow2, pool: {lab.pool}, source: {tmp_path}/base.qcow2, sha256: {digest}}}
        domains:
          - name: {name}
            type: {DOMAIN_TYPE}
            memory: 128MiB
            state: stopped  # so the test can write to the disk while no qemu holds it
            disks:
              - {{pool: {lab.pool}, backing: {lab.name}-base.qcow2, size: 32MiB}}
              - {{pool: {lab.pool}, name: {name}-data.qcow2, size: 16MiB, keep: true}}
            cloud_init:
              user_data: {{runcmd: [[touch, /data/marker]]}}
        """)
    lab.cli("apply", check=0)
    data = lab.pool_path / f"{name}-data.qcow2"
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x42 0 4k", str(data)], check=True, capture_output=True)

    out = lab.cli("destroy", check=0)
    assert f"keeps {lab.pool}/{name}-data.qcow2" in out.stdout
    assert lab.domain_names() == set()
    # the image (with its record) and the kept disk stay; the overlay and the seed, made for the domain, go
    assert lab.volume_names() == {f"{lab.name}-base.qcow2", f"{lab.name}-base.qcow2.reconcile.json",
                                  f"{name}-data.qcow2"}

    again = lab.cli("apply", check=0)
    assert f"+ create volume {lab.pool}/{name}-vda.qcow2" in again.stdout
    assert f"{name}-data.qcow2  (" not in again.stdout  # not created anew
    assert "create image" not in again.stdout
    xml = lab.conn.lookupByName(name).XMLDesc(0)
    assert f"volume='{name}-data.qcow2'" in xml
    check = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x42 0 4k", str(data)],
                           capture_output=True, text=True)
    assert "Pattern verification failed" not in check.stdout + check.stderr and check.returncode == 0
    assert "No changes." in lab.cli("apply", check=0).stdout


def test_backing_change_is_refused_unless_replacing_is_allowed(lab, tmp_path):
    make_base(tmp_path / "a.qcow2", "16M")
    make_base(tmp_path / "b.qcow2", "16M")
    name = lab.dom("rep")
    spec = f"""
        images:
          - {{name: {lab.name}-a.qcow2, pool: {lab.pool}, source: {tmp_path}/a.qcow2}}
          - {{name: {lab.name}-b.qcow2, pool: {lab.pool}, source: {tmp_path}/b.qcow2}}
        domains:
          - name: {name}
            type: {DOMAIN_TYPE}
            memory: 128MiB
            stop_timeout: 0
            disks: [{{pool: {lab.pool}, backing: {lab.name}-a.qcow2, size: 32MiB}}]
        """
    lab.spec("rep.yaml", spec)
    lab.cli("apply", check=0)
    disk = lab.pool_path / f"{name}-vda.qcow2"
    lab.spec("rep.yaml", spec.replace(f"backing: {lab.name}-a.qcow2", f"backing: {lab.name}-b.qcow2"))
    refused = lab.cli("plan")
    assert refused.returncode == 1
    assert f"is backed by {lab.pool_path}/{lab.name}-a.qcow2, the spec says {lab.pool_path}/{lab.name}-b.qcow2" in refused.stdout
    assert "set allow_replace: true on the disk" in refused.stdout
    assert qemu_img_info(disk)["backing-filename"].endswith(f"{lab.name}-a.qcow2")

    lab.spec("rep.yaml", spec.replace(f"backing: {lab.name}-a.qcow2", f"backing: {lab.name}-b.qcow2, allow_replace: true"))
    plan = lab.cli("plan", check=0)
    assert f"< stop domain {name}" in plan.stdout
    assert f"- destroy volume {lab.pool}/{name}-vda.qcow2" in plan.stdout and "its data is lost" in plan.stdout
    assert f"+ create volume {lab.pool}/{name}-vda.qcow2" in plan.stdout
    lab.cli("apply", check=0)
    assert qemu_img_info(disk)["backing-filename"].endswith(f"{lab.name}-b.qcow2")
    assert lab.conn.lookupByName(name).isActive()
    lab.cli("plan", "--detailed-exitcode", check=0)
    assert os.path.exists(lab.pool_path / f"{lab.name}-a.qcow2")  # images are never deleted


def test_backing_by_path_needs_a_pool_volume(lab, tmp_path):
    make_base(tmp_path / "base.qcow2", "16M")
    name = lab.dom("path")
    lab.spec("path.yaml", f"""
        images:
          - {{name: {lab.name}-base.qcow2, pool: {lab.pool}, source: {tmp_path}/base.qcow2}}
        domains:
          - name: {name}
            type: {DOMAIN_TYPE}
            memory: 128MiB
            state: stopped
            disks:
              - {{pool: {lab.pool}, backing: {lab.pool_path}/{lab.name}-base.qcow2}}
              - {{pool: {lab.pool}, backing: {tmp_path}/base.qcow2}}
        """)
    out = lab.cli("apply")
    assert out.returncode == 1
    assert (f"create volume {lab.pool}/{name}-vdb.qcow2: the base image {tmp_path}/base.qcow2 is not a volume of "
            "any storage pool") in out.stdout, out.stdout
    info = qemu_img_info(lab.pool_path / f"{name}-vda.qcow2")
    assert info["backing-filename"] == f"{lab.pool_path}/{lab.name}-base.qcow2"
    assert info["virtual-size"] == 16 * 1024 * 1024  # no size: the base's
    assert f"{name}-vdb.qcow2" not in lab.volume_names()


def test_declared_pool_is_created_built_started_and_autostarted(lab):
    name = lab.dom("pool")
    lab.spec("vm.yaml", f"""
        domains:
          - {{name: {name}, type: {DOMAIN_TYPE}, memory: 128MiB, state: stopped, disks: [{{pool: {lab.pool}, size: 16MiB}}]}}
        """)
    out = lab.cli("apply", check=0)
    assert f"+ create pool {lab.pool}" in out.stdout
    pool = lab.conn.storagePoolLookupByName(lab.pool)
    assert pool.isActive() and pool.autostart() and lab.pool_path.is_dir()

    # Stopped and its directory gone (a host rebuilt, a cleanup script): built and started again.
    pool.destroy()
    shutil.rmtree(lab.pool_path)
    plan = lab.cli("plan", "--detailed-exitcode", check=2)
    assert f"> start pool {lab.pool}  (defined but not active)" in plan.stdout
    lab.cli("apply", check=0)
    assert pool.isActive() and lab.pool_path.is_dir()
    # its volume is gone with the directory: created again, after the pool is back
    assert f"{name}-vda.qcow2" in lab.volume_names()
    lab.cli("plan", "--detailed-exitcode", check=0)
