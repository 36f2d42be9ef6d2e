"""cloud-init NoCloud seed ISOs, built and read in memory with pycdlib.

A seed is an ISO 9660 image with the volume label `cidata` holding `meta-data`,
`user-data` and, when given, `network-config`; cloud-init's NoCloud datasource finds it by
that label on any attached disk. pycdlib is a maintained, pure-Python ISO library: no
temporary directory or mount and no subprocess, and the same library reads a seed back,
which is how the live content of a seed volume is compared with the spec (byte for byte,
file by file), so a second apply neither rebuilds nor uploads anything.

No I/O beyond memory: bytes in, bytes out.
"""

from __future__ import annotations

import io
import re

LABEL = "cidata"
FILES = ("meta-data", "user-data", "network-config")
MAX_SEED_BYTES = 16 * 1024 * 1024  # a seed larger than this is not one reconcile wrote

_INSTANCE_ID = re.compile(rb"^instance-id:\s*['\"]?([^'\"\s]+)", re.MULTILINE)


def _iso9660_name(name: str) -> str:
    """The plain ISO 9660 name (8.3-ish, upper case); readers use the Rock Ridge/Joliet name."""
    return "/" + name.upper().replace("-", "_")[:30] + ".;1"


def build_iso(files: tuple[tuple[str, bytes], ...]) -> bytes:
    """The seed ISO for `files` (name, content), with Rock Ridge and Joliet long names."""
    import pycdlib  # here: only runs with seeds need it, and it takes 6 ms to import

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=LABEL, joliet=3, rock_ridge="1.09",
            app_ident_str="reconcile cloud-init seed")
    try:
        for name, data in files:
            iso.add_fp(io.BytesIO(data), len(data), _iso9660_name(name), rr_name=name, joliet_path="/" + name)
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()
    return out.getvalue()


def read_iso(data: bytes) -> dict[str, bytes] | None:
    """The files of a seed ISO by their long names; None if `data` is not a cidata ISO."""
    import pycdlib
    from pycdlib.pycdlibexception import PyCdlibException

    iso = pycdlib.PyCdlib()
    try:
        iso.open_fp(io.BytesIO(data))
    except (PyCdlibException, ValueError, IndexError, OSError):
        return None
    try:
        if iso.pvd.volume_identifier.decode("ascii", "replace").strip() != LABEL:
            return None
        files: dict[str, bytes] = {}
        for child in iso.list_children(iso_path="/"):
            if child.is_dot() or child.is_dotdot() or child.is_dir():
                continue
            name = child.rock_ridge.name().decode() if child.rock_ridge else child.file_identifier().decode()
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, iso_path="/" + child.file_identifier().decode())
            files[name] = out.getvalue()
        return files
    except (PyCdlibException, ValueError, IndexError, UnicodeDecodeError):
        return None
    finally:
        iso.close()


def instance_id_of(meta_data: bytes) -> str | None:
    match = _INSTANCE_ID.search(meta_data)
    return match.group(1).decode("utf-8", "replace") if match else None
