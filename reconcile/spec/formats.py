"""Value formats of the spec language: names, sizes, paths, addresses, MACs, URIs. Pure.

The schema names a format beside a pattern: editors check the pattern, and reconcile runs
the checker below, whose message says exactly what is wrong (which character, how long)
rather than that a regular expression did not match.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable

from ..model.units import parse_size

_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
# `{index}` or `{index:0N}` (zero-padded to N digits) in a name that `count` copies.
INDEX = re.compile(r"\{index(?::0([1-9]))?\}")


def check_name(value: str) -> None:
    """Raise ValueError saying exactly why `value` is not a safe libvirt and file name."""
    if _NAME_OK.fullmatch(value):
        return
    if not value:
        raise ValueError("the name is empty; expected letters, digits and . _ + -")
    for ch in value:
        if ord(ch) < 32 or ord(ch) == 127:
            raise ValueError(f"{value!r} contains a control character (U+{ord(ch):04X}); "
                             "expected letters, digits and . _ + -")
    if "/" in value:
        raise ValueError(f"{value!r} contains '/', which a libvirt name or a file name cannot hold; "
                         "expected letters, digits and . _ + -")
    if len(value) > 64:
        raise ValueError(f"{value!r} is {len(value)} characters long; expected at most 64")
    if not value[0].isascii() or not value[0].isalnum():
        raise ValueError(f"{value!r} starts with {value[0]!r}; expected a letter or digit first")
    bad = next(ch for ch in value if not (ch.isascii() and (ch.isalnum() or ch in "._+-")))
    raise ValueError(f"{value!r} contains {bad!r}; expected letters, digits and . _ + -")


def check_templated_name(value: str) -> None:
    check_name(INDEX.sub("1", value))


def check_size(value: str) -> None:
    parse_size(value)


def check_path(value: str) -> None:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path; expected a path starting with /")
    for ch in value:
        if ord(ch) < 32 or ord(ch) == 127:
            raise ValueError(f"{value!r} contains a control character (U+{ord(ch):04X}); expected a plain path")


def check_address(value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address; expected e.g. 127.0.0.1 or ::1") from None


def check_ipv4(value: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address; expected four numbers 0-255 such as 192.168.100.1") \
            from None


def check_hostname(value: str) -> None:
    label = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    if len(value) > 253 or not re.fullmatch(rf"{label}(\.{label})*", value):
        raise ValueError(f"{value!r} is not a host name; expected letters, digits and inner hyphens, in labels "
                         "joined by dots, such as web01 or db.lab")


def check_mac(value: str) -> None:
    if not re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", value):
        raise ValueError(f"{value!r} is not a MAC address; expected six hex pairs such as 52:54:00:12:34:56")


def check_uri(value: str) -> None:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\x00-\x1f\x7f]+", value):
        raise ValueError(f"{value!r} is not an absolute URI; expected e.g. https://host/path or qemu:///system")


FORMATS: dict[str, Callable[[str], None]] = {
    "name": check_name,
    "templated-name": check_templated_name,
    "size": check_size,
    "path": check_path,
    "address": check_address,
    "ipv4-address": check_ipv4,
    "mac": check_mac,
    "hostname": check_hostname,
    "uri": check_uri,
}


def closest(word: object, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice a typo most likely meant, for "did you mean ...?"; None when none is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None
