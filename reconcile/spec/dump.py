"""Spec data back to YAML text, as `export` and `import` print it, with comments.

PyYAML writes no comments, so a list item that carries some (`Commented`) is written on its
own, after its comment lines. A comment holds text from the host (a device's XML), so it is
escaped into one line of printable characters: nothing in it can end the comment and
start YAML of its own, for this reader or for a YAML 1.1 one.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

import yaml

_WIDTH = 100


@dataclass(frozen=True)
class Commented:
    """An item of a top-level list, written after comment lines that say something about it."""

    value: Any
    comments: tuple[str, ...] = ()


def dump(doc: dict[str, Any]) -> str:
    """A spec document as YAML, keys in the order given (export writes them as a person
    would); items of a top-level list may be `Commented`."""
    parts = []
    for key, value in doc.items():
        if isinstance(value, list) and any(isinstance(item, Commented) for item in value):
            parts.append(_plain({key: None}, block=True).removesuffix(" null\n") + "\n")  # `key:`, the items follow
            for item in value:
                if isinstance(item, Commented):
                    parts.extend(comment_line(c) + "\n" for c in item.comments)
                    item = item.value
                parts.append(_plain([item]))
        else:
            parts.append(_plain({key: value}, block=not isinstance(value, (dict, list))))
    return "".join(parts)


def plain(doc: Any) -> Any:
    """The document without its comments (for JSON, or to check it)."""
    if isinstance(doc, Commented):
        return plain(doc.value)
    if isinstance(doc, dict):
        return {k: plain(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [plain(v) for v in doc]
    return doc


def _plain(data: Any, block: bool = False) -> str:
    """YAML of one entry: collections of scalars in flow style (`{pool: p, size: 1GiB}`), the
    rest in block style; `block`: a mapping of one scalar, which is block style at the top."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False if block else None, width=_WIDTH)


# Characters that a comment shows as escapes: every control, format, unassigned, private
# and surrogate code point, and the line and paragraph separators (NEL, U+2028 and U+2029
# end a line in YAML 1.1, and so would end the comment there).
_ESCAPED = {"Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp"}


def comment_line(text: str) -> str:
    """`# text` on one line: a backslash and every character that could end the line or
    that is not printable become escapes (\\\\, \\n, \\xNN, \\uNNNN, \\UNNNNNNNN), so the
    comment reads back as exactly one comment."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif unicodedata.category(ch) in _ESCAPED:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "# " + "".join(out)
