"""What a disk image says about itself: its first bytes, read from the volume. Pure.

libvirt's record of a volume is only as fresh as its last pool refresh, and a volume that
reconcile has just uploaded is recorded as reconcile created it (an empty raw volume), so
neither the format of a base nor the virtual size and backing of an overlay may be taken
from it. The image's own header says them: a qcow2 header carries the virtual size, the
backing file and (in a header extension) the backing file's format; anything else is raw,
as large as its file.

An import in progress carries reconcile's own marker in its first bytes until the real
head is written as the import's last step (see `LibvirtHost.upload_volume`), so a volume
whose head still holds the marker is an import that never finished, whatever its format.
"""

from __future__ import annotations

import struct

from ..model.observed import ImageHead

QCOW2_MAGIC = b"QFI\xfb"
# The head a reading takes, and what an import holds back until the end: the qcow2 header,
# its extensions and the backing file name fit in it for every image qemu-img writes (they
# sit right after the header). One RPC message of this size is written by libvirtd at once,
# so the real head replaces the marker whole or not at all.
HEAD_BYTES = 4096
# The first bytes of a volume while reconcile imports into it; no image format starts so.
UNFINISHED = b"RECONCILE-IMPORT-UNFINISHED\n"
_BACKING_FORMAT_EXT = 0xE2792ACA
_END_EXT = 0


def unfinished_marker(length: int) -> bytes:
    """The stand-in head an import writes first, replaced by the real one at its end."""
    return (UNFINISHED + b"\0" * max(0, length - len(UNFINISHED)))[:length]


def parse(head: bytes) -> ImageHead:
    """Read an image's first bytes (at least the header; `HEAD_BYTES` covers qemu's layout)."""
    if not head or head.startswith(UNFINISHED):  # empty: killed before even the marker was written
        return ImageHead("unfinished")
    if not head.startswith(QCOW2_MAGIC) or len(head) < 72:
        return ImageHead("raw")
    version, backing_offset, backing_length, _cluster_bits, size = struct.unpack_from(">IQIIQ", head, 4)
    backing = None
    if backing_offset and backing_length and backing_offset + backing_length <= len(head):
        backing = head[backing_offset:backing_offset + backing_length].decode("utf-8", "replace")
    header_length = 72
    if version >= 3 and len(head) >= 104:
        header_length = struct.unpack_from(">I", head, 100)[0]
    return ImageHead("qcow2", size, backing, _backing_format(head, header_length) if backing_offset else None)


def _backing_format(head: bytes, offset: int) -> str | None:
    """The backing format header extension, if the overlay records one."""
    while offset + 8 <= len(head):
        kind, length = struct.unpack_from(">II", head, offset)
        if kind == _END_EXT:
            return None
        data = head[offset + 8:offset + 8 + length]
        if kind == _BACKING_FORMAT_EXT:
            return data.decode("ascii", "replace") or None
        offset += 8 + (length + 7) // 8 * 8
    return None
