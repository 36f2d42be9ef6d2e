"""What an image's first bytes say, read as observe reads them, against files qemu-img writes."""

from __future__ import annotations

import subprocess

import pytest

from reconcile.codec import imagehead


def head(path) -> imagehead.ImageHead:
    with open(path, "rb") as f:
        return imagehead.parse(f.read(imagehead.HEAD_BYTES))


@pytest.mark.parametrize("compat", ["0.10", "1.1"])
def test_qcow2_overlays_say_their_base_its_format_and_their_size(tmp_path, compat):
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    assert head(base) == imagehead.ImageHead("qcow2", 64 * 1024 * 1024)
    for fmt, size in (("qcow2", "1G"), ("raw", None)):
        overlay = tmp_path / f"over-{fmt}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"compat={compat}", "-F", fmt, "-b",
                        str(base), str(overlay), *([size] if size else [])], check=True)
        got = head(overlay)
        assert (got.format, got.backing, got.backing_format) == ("qcow2", str(base), fmt)
        # -F raw reads the base's file as the disk: the overlay is as large as that file, in
        # whole 512-byte sectors
        want = 1024**3 if size else -(-base.stat().st_size // 512) * 512
        assert got.virtual_size == want


def test_raw_empty_and_unfinished(tmp_path):
    raw = tmp_path / "disk.img"
    raw.write_bytes(b"\x00" * 8192)
    assert head(raw) == imagehead.ImageHead("raw")
    assert imagehead.parse(b"").unfinished  # killed before even the marker was written
    marker = imagehead.unfinished_marker(imagehead.HEAD_BYTES)
    assert len(marker) == imagehead.HEAD_BYTES and imagehead.parse(marker + b"QFI\xfb").unfinished
