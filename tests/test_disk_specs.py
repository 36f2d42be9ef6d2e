"""What the specs say about images, overlays and cloud-init, checked before any host is."""

from __future__ import annotations

import pytest

from reconcile import spec as specs
from reconcile.errors import SpecError

from .conftest import write


def problems(path) -> list[str]:
    with pytest.raises(SpecError) as exc:
        specs.load([str(path)])
    return [str(d) for d in exc.value.diagnostics]


def test_disk_mistakes_are_located(tmp_path):
    f = write(tmp_path / "s.yaml", """
        images:
          - {name: base.qcow2, source: missing.qcow2, sha256: "abc"}
        domains:
          - name: vm
            memory: 256MiB
            disks:
              - {backing: base.qcow2, format: raw, size: 1GiB}
            cloud_init:
              user_data: nowhere.yaml
          - name: other
            memory: 256MiB
            disks:
              - {format: qcow2}
              - {backing: base.qcow2}
        """)
    # A missing source is no problem of the specs: once imported, an image needs it no more.
    assert problems(f) == [
        f"{f}:2:55: resource 'base.qcow2': sha256: 'abc' is not valid; expected 64 hex digits, the SHA-256 the "
        "source must have; on a mismatch the import fails and nothing is left in the pool",
        f"{f}:7:39: resource 'vm': disks[0].format: 'raw' cannot be an overlay; expected qcow2 for a disk with backing",
        f"{f}:9:18: resource 'vm': cloud_init.user_data: cannot read {tmp_path}/nowhere.yaml: No such file or "
        "directory; expected a file beside the spec, a block of text or a mapping",
        # only an overlay may leave size out
        f"{f}:13:9: resource 'other': disks[0]: missing required field 'size'",
    ]


def test_cloud_init_files_beside_the_spec_are_used_as_they_are(tmp_path):
    (tmp_path / "user-data.sh").write_text("#!/bin/sh\necho hello\n")
    f = write(tmp_path / "s.yaml", """
        domains:
          - name: vm
            memory: 256MiB
            disks: [{pool: lab, size: 1GiB}]
            cloud_init:
              user_data: user-data.sh
              meta_data: {instance-id: fixed-1, region: here}
        """)
    desired = specs.load([str(f)])
    seed = desired.domains[0].seed
    files = dict(seed.files)
    assert files["user-data"] == b"#!/bin/sh\necho hello\n"
    assert files["meta-data"] == b"instance-id: fixed-1\nlocal-hostname: vm\nregion: here\n"
    assert "network-config" not in files
    assert (seed.pool, seed.volume, seed.instance_id) == ("lab", "vm-cidata.iso", "fixed-1")
    cdrom = desired.domains[0].cdroms[-1]
    assert (cdrom.pool, cdrom.volume, cdrom.target) == ("lab", "vm-cidata.iso", "sda")


def test_instance_id_follows_the_content(tmp_path):
    spec = """
        domains:
          - name: vm
            memory: 256MiB
            cloud_init: {user_data: {packages: [PKG]}}
        """
    ids = set()
    for pkg in ("nginx", "nginx", "apache2"):
        f = write(tmp_path / "s.yaml", spec.replace("PKG", pkg))
        ids.add(specs.load([str(f)]).domains[0].seed.instance_id)
    assert len(ids) == 2  # the same content gives the same id, other content another one


def test_a_block_of_text_is_used_as_it_is(tmp_path):
    f = write(tmp_path / "s.yaml", """
        domains:
          - name: vm
            memory: 256MiB
            cloud_init:
              user_data: |
                #cloud-config
                packages: [nginx]
        """)
    files = dict(specs.load([str(f)]).domains[0].seed.files)
    assert files["user-data"] == b"#cloud-config\npackages: [nginx]\n"
