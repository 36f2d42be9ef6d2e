"""The versions of an image in its pool, and reconcile's record of which one is current.

An image is first imported as the volume of its own name. A rebuild that refreshes it and
finds its source changed imports the new content beside it as `NAME.VERSION` (twelve hex
digits, see `SourceStamp.version`), so overlays built on the old version keep their base.
Which version new overlays are built on is written in a small JSON volume beside them,
`NAME.reconcile.json`, with the stamp of the source it was imported from: libvirt volumes
carry no metadata of their own, and a record in the pool is seen by every project and
every machine that reaches the host. Pure: no I/O.
"""

from __future__ import annotations

import json

from ..model import ImageRecord, SourceStamp

RECORD_SUFFIX = ".reconcile.json"
# Always this size, padded with spaces: a new record overwrites the old in place, in one
# message, so a run cut short leaves the old record or the new one, never none.
RECORD_BYTES = 4096
MAX_RECORD_BYTES = 64 * 1024
FORMAT = 1


def record_volume(image: str) -> str:
    return image + RECORD_SUFFIX


def encode(record: ImageRecord) -> bytes:
    stamp = {k: v for k, v in vars(record.stamp).items() if v is not None}
    data = json.dumps({"format": FORMAT, "current": record.current, "source": stamp,
                       "versions": sorted(set(record.versions) | {record.current})}, sort_keys=True).encode()
    if len(data) > RECORD_BYTES:
        raise ValueError(f"an image record of {len(data)} bytes")  # an ETag of kilobytes
    return data.ljust(RECORD_BYTES)


def decode(data: bytes | None) -> ImageRecord | None:
    """The record, or None for one that is missing or unreadable (then the image's own
    volume is its current version, and its source is taken as unknown)."""
    if not data:
        return None
    try:
        doc = json.loads(data.decode())
        stamp = doc["source"]
        current = str(doc["current"])
        return ImageRecord(current, SourceStamp(
            size=stamp.get("size"), mtime_ns=stamp.get("mtime_ns"), sha256=stamp.get("sha256"),
            etag=stamp.get("etag"), last_modified=stamp.get("last_modified")),
            versions=tuple(str(v) for v in doc.get("versions", (current,))))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
