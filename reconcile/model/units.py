"""Sizes with units, the way users write them in specs.

Plain integers are rejected on purpose: `memory: 512` could mean KiB (libvirt's default),
MiB or bytes, and guessing wrong is silent. Binary units (`KiB`, `MiB`, `GiB`, `TiB`, and the
short `K`, `M`, `G`, `T` that qemu-img and virsh use) are powers of 1024; `KB`, `MB`, `GB`,
`TB` are powers of 1000, as their names say.
"""

from __future__ import annotations

import re

_UNITS = {
    "B": 1,
    "K": 1024, "KIB": 1024, "KB": 1000,
    "M": 1024**2, "MIB": 1024**2, "MB": 1000**2,
    "G": 1024**3, "GIB": 1024**3, "GB": 1000**3,
    "T": 1024**4, "TIB": 1024**4, "TB": 1000**4,
    "P": 1024**5, "PIB": 1024**5, "PB": 1000**5,
}
_SIZE = re.compile(r"^\s*(\d+)\s*([A-Za-z]+)\s*$")

UNIT_HELP = "a whole number with a unit, such as 512MiB, 2GiB or 10G (B, KiB, MiB, GiB, TiB, PiB, KB, MB, GB, TB, PB)"


def parse_size(text: object) -> int:
    """Bytes for a size such as `2GiB`; ValueError with a message a user can act on."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"{text!r} is not a size; expected {UNIT_HELP}")
    match = _SIZE.match(text)
    if not match:
        if text.strip().startswith("-"):
            raise ValueError(f"{text!r} is negative; expected a positive size, {UNIT_HELP}")
        if re.match(r"^\s*\d*[.,]\d", text):
            raise ValueError(f"{text!r} is not a whole number; expected {UNIT_HELP} (write 1536MiB, not 1.5GiB)")
        if re.match(r"^\s*\d+\s*$", text):
            raise ValueError(f"{text!r} has no unit; expected {UNIT_HELP}")
        raise ValueError(f"{text!r} is not a size; expected {UNIT_HELP}")
    number, unit = match.groups()
    factor = _UNITS.get(unit.upper())
    # "mb" is accepted as MB, but "Mib"/"mIB" casing mistakes are still the same unit.
    if factor is None:
        raise ValueError(f"{text!r} has the unknown unit {unit!r}; expected {UNIT_HELP}")
    return int(number) * factor


def format_size(size: int) -> str:
    """The shortest exact binary spelling: 536870912 -> '512MiB', 1000 -> '1000B'."""
    for unit in ("PiB", "TiB", "GiB", "MiB", "KiB"):
        factor = _UNITS[unit.upper()]
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"
