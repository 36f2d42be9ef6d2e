"""Load spec files into `Desired`: YAML with source positions, JSON Schema, semantic checks.

Every problem in every file is collected and reported together, each located at the line
and column of the YAML node it concerns. Nothing here talks to libvirt: specs are valid
before the host is looked at. This is the only module that imports yaml and jsonschema.

YAML is read by the 1.2 core schema, and a plain scalar that YAML 1.1 (PyYAML, Ansible,
cloud-init) would read differently (`yes`, `on`, `0755`, `1e3`, `1_000`, `12:30`, dates)
is an error: a spec must mean the same thing to every tool that reads it.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import Diagnostic, SpecError, shown_path
from ..codec import network as netxml
from .formats import FORMATS, check_name
from .layers import DIRECTORY_DEFAULTS, Layer, Located, expand_index, field_text, has_index, merge_layers
from ..model import (DEFAULT_STOP_TIMEOUT, Backing, Cdrom, Console, Desired, Disk, DomainSpec, Graphics, ImageSpec, Interface,
                    NetworkSpec, Origin, PoolSpec, Reference, Seed, State)
from .quick_check import ANNOTATIONS, compile_schema
from ..model.units import parse_size

if TYPE_CHECKING:
    import jsonschema  # imported where a file has problems: it is a third of the start-up time

__all__ = ["SpecError", "load", "load_schema", "REFERENCES"]

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
SPEC_SCHEMA = SCHEMA_DIR / "spec.schema.json"
SUFFIXES = (".yaml", ".yml")
MAX_NODES = 100_000  # values aliases may add; an alias bomb expands past this long before memory runs out
MAX_DEPTH = 64       # no spec nests this deep; deeper is an attack or a generator gone wrong
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_MEMORY = 64 * 1024**4   # 1TiB on purpose is fine; 10^30 bytes is a unit mistake
MAX_DISK = 16 * 1024**5
MAX_COUNT = 1000  # as in the schema; checked again so that a huge count is never expanded
TOP_KINDS = ("domains", "pools", "networks", "images")  # top-level lists whose items are named resources

# References a domain makes to resources that must be declared in the specs or exist on
# the host: (kind, path of the field inside a domain with "*" for every list item, default).
# A new resource kind adds a row.
REFERENCES: list[tuple[str, tuple[str, ...], str | None]] = [
    ("pools", ("disks", "*", "pool"), "default"),
    ("networks", ("interfaces", "*", "network"), None),
    ("pools", ("cloud_init", "pool"), None),
]

# Boot devices and the list of the domain that must hold at least one such device. A row
# whose list is not in the schema is not checked, nor is a list a spec may leave unmanaged
# (interfaces left out keep what the domain has), unless it is given and empty.
BOOT_DEVICES = {"hd": "disks", "cdrom": "cdroms", "network": "interfaces"}
UNMANAGED_WHEN_LEFT_OUT = {"interfaces"}

Path_ = tuple[Any, ...]


@functools.lru_cache(maxsize=1)
def _schema_text() -> str:
    return SPEC_SCHEMA.read_text(encoding="utf-8")


def load_schema() -> dict[str, Any]:
    return json.loads(_schema_text())


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = load_schema()
    checker = jsonschema.FormatChecker(formats=())
    for name, func in FORMATS.items():
        checker.checks(name, raises=ValueError)(_returns_true(func))
    cls = jsonschema.validators.extend(jsonschema.validators.validator_for(schema), {"pattern": _pattern})
    return cls(_inline_refs(schema), format_checker=checker)


@functools.lru_cache(maxsize=1)
def _domain_fields() -> frozenset[str]:
    return frozenset(load_schema()["$defs"]["domain"]["properties"])


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with each local `$ref` replaced by what it points to (`$defs` stay).

    Resolving references is a third of the validation time of a large spec directory;
    resolving them once up front gives the same verdicts. A reference with keywords other
    than annotations beside it, or one that recurses, is left for jsonschema to follow.
    """
    defs = schema.get("$defs", {})

    def walk(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/") and set(node) - {"$ref"} <= ANNOTATIONS:
                name = ref[len("#/$defs/"):]
                if isinstance(defs.get(name), dict) and name not in seen:
                    # the target's own annotations win: they are what jsonschema reports
                    return walk({k: v for k, v in node.items() if k != "$ref"} | defs[name], seen + (name,))
            return {k: walk(v, seen) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, seen) for v in node]
        return node

    return walk(schema, ())


@functools.lru_cache(maxsize=256)
def _ecma(pattern: str) -> re.Pattern[str]:
    # In JSON Schema (ECMA 262) `$` is the end of the text; in Python it also matches before
    # a final newline, which would let "web01\n" pass as a name.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Any:
    if isinstance(instance, str) and not _ecma(pattern).search(instance):
        import jsonschema

        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _returns_true(func: Callable[[str], None]) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        if isinstance(value, str):
            func(value)
        return True
    return check


# ---------------------------------------------------------------- reading YAML

@dataclass
class SpecFile:
    """One parsed file: plain data plus the position of every node, keyed by its path."""

    path: str
    data: Any
    marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)  # where each key itself is
    # paths already reported (a YAML trap, a schema error): nothing below is built
    bad: set[Path_] = field(default_factory=set)

    def mark(self, path: Iterable[Any]) -> tuple[int, int]:
        """Position of the node at `path`, or of its nearest ancestor that has one."""
        key = tuple(path)
        while key not in self.marks and key:
            key = key[:-1]
        return self.marks.get(key, (1, 1))

    def resource_name(self, path: Iterable[Any]) -> str:
        key = tuple(path)
        if len(key) >= 2 and key[0] in TOP_KINDS and isinstance(self.data, dict):
            items = self.data.get(key[0])
            if isinstance(items, list) and isinstance(key[1], int) and key[1] < len(items):
                item = items[key[1]]
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    return item["name"]
        return ""

    def diag(self, path: Iterable[Any], message: str, resource: str | None = None, at_key: bool = False
             ) -> Diagnostic:
        path = tuple(path)
        line, col = self.keys[path] if at_key and path in self.keys else self.mark(path)
        name = self.resource_name(path) if resource is None else resource
        return Diagnostic(self.path, line, col, field_path(path) if name else field_path(path, keep=True),
                          message, name)

    def is_bad(self, path: Path_) -> bool:
        """True when something at or below `path` has been reported already."""
        n = len(path)
        return any(p[:n] == path for p in self.bad)


def field_path(path: Path_, keep: bool = False) -> str:
    """`('domains', 0, 'disks', 1, 'size')` -> `disks[1].size` (the resource is named apart)."""
    parts = list(path)
    if not keep and len(parts) >= 2 and parts[0] in TOP_KINDS and isinstance(parts[1], int):
        parts = parts[2:]
    return field_text(tuple(parts))


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's parser (libyaml's when installed: same marks, many times faster) with the
    YAML 1.2 core schema for plain scalars (see the module doc)."""


_Loader.yaml_implicit_resolvers = {}
for _tag, _regexp, _first in [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     "-+0123456789."),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", r"^(?:<<)$", "<"),
]:
    _Loader.add_implicit_resolver(_tag, re.compile(_regexp), list(_first))

_STR, _INT, _FLOAT, _BOOL, _NULL, _MAP, _SEQ, _MERGE = (f"tag:yaml.org,2002:{t}" for t in
                                                       ("str", "int", "float", "bool", "null", "map", "seq", "merge"))
_RESOLVED_BY_FIRST = _Loader.yaml_implicit_resolvers
# How a plain scalar reads depends on its text alone, and the same few texts (sizes, counts,
# states) recur in every domain: the readings of up to this many are kept for the run.
_REMEMBERED = 4096
_SCALAR_TAGS: dict[str, str] = {}


def _resolve(self: Any, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
    """PyYAML's `resolve` with the common cases first: called for every node of every file,
    and most plain scalars begin with a character no implicit type can begin with."""
    if kind is yaml.ScalarNode:
        if implicit[0] and (not value or value[0] in _RESOLVED_BY_FIRST):
            tag = _SCALAR_TAGS.get(value)
            if tag is None:
                tag = yaml.resolver.BaseResolver.resolve(self, kind, value, implicit)
                if len(_SCALAR_TAGS) < _REMEMBERED:
                    _SCALAR_TAGS[value] = tag
            return tag
        return _STR
    return _MAP if kind is yaml.MappingNode else _SEQ


_Loader.resolve = _resolve


_DECIMAL, _OCTAL, _HEX = re.compile(r"[-+]?[0-9]+"), re.compile(r"0o[0-7]+"), re.compile(r"0x[0-9a-fA-F]+")


def _core_value(tag: str, text: str) -> Any:
    """A scalar by the YAML 1.2 core schema; ValueError when `text` is not of `tag`."""
    if tag == _STR:
        return text
    if tag == _NULL:
        if text in ("~", "null", "Null", "NULL", ""):
            return None
    elif tag == _BOOL:
        if text in ("true", "True", "TRUE", "false", "False", "FALSE"):
            return text.lower() == "true"
    elif tag == _INT:
        if _DECIMAL.fullmatch(text):
            return int(text, 10)
        if _OCTAL.fullmatch(text):
            return int(text[2:], 8)
        if _HEX.fullmatch(text):
            return int(text[2:], 16)
    elif tag == _FLOAT:
        low = text.lower().lstrip("+")
        if low in (".inf", "-.inf", ".nan"):
            return float(low.replace(".", ""))
        try:
            return float(text)
        except ValueError:
            pass
    raise ValueError(text)


_V11 = yaml.SafeLoader("")
# A plain scalar that starts with none of these is a string to every YAML reader.
_V11_FIRST = frozenset(c for c in _V11.yaml_implicit_resolvers if c) | frozenset(
    c for c in _Loader.yaml_implicit_resolvers if c)


@functools.lru_cache(maxsize=_REMEMBERED)
def _yaml11_value(text: str) -> Any:
    """What PyYAML's YAML 1.1 reading makes of a plain scalar (a str when it cannot say)."""
    tag = _V11.resolve(yaml.ScalarNode, text, (True, False))
    constructor = yaml.SafeLoader.yaml_constructors.get(tag)
    if tag == _STR or constructor is None:
        return text
    try:
        return constructor(_V11, yaml.ScalarNode(tag, text))
    except Exception:  # noqa: BLE001 - whatever PyYAML cannot build is no surprise to report
        return text


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"the number {value}"
    if isinstance(value, float):
        return f"the number {value:g}"
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"the {type(value).__name__} {value}"


def _ambiguity(text: str, v12: Any) -> str | None:
    v11 = _yaml11_value(text)
    if type(v11) is type(v12) and v11 == v12:
        return None
    if isinstance(v11, float) and isinstance(v12, float) and math.isnan(v11) and math.isnan(v12):
        return None
    if isinstance(v11, bool):
        fix = f"write {'true' if v11 else 'false'} for a boolean, or quote it ('{text}') for a string"
    elif isinstance(v12, str) and isinstance(v11, (int, float)):
        fix = f"quote it ('{text}') if you mean the text, or write {v11!r} if you mean that number"
    elif isinstance(v12, (int, float)):
        fix = f"quote it ('{text}') if you mean the text, or write {v12!r} if you mean that number"
    else:
        fix = f"quote it ('{text}') for a string"
    return (f"{text!r} is {_describe(v11)} in YAML 1.1 but {_describe(v12)} in YAML 1.2, so tools disagree "
            f"on what it means; {fix}")


class _TooLarge(Exception):
    def __init__(self, node: yaml.Node, message: str):
        super().__init__(message)
        self.node, self.message = node, message


class _Builder:
    """Turns a composed YAML node tree into plain data, recording marks and rejecting traps."""

    def __init__(self, spec: SpecFile, problems: list[Diagnostic]):
        self.spec, self.problems = spec, problems
        self.count = 0  # values built again through an alias
        self.built: set[int] = set()  # the nodes built once already
        self.active: set[int] = set()
        self.pending: list[tuple[int, int, Path_, str]] = []

    def problem(self, node: yaml.Node, path: Path_, message: str) -> None:
        self.pending.append((node.start_mark.line + 1, node.start_mark.column + 1, path, message))
        self.spec.bad.add(path)

    def finish(self) -> None:
        """Report what was found, naming the resource now that the whole file is read."""
        seen: set[tuple[int, int, str]] = set()
        for line, col, path, message in self.pending:
            if (line, col, message) in seen:
                continue  # a node used again through an alias: said once, where it is written
            seen.add((line, col, message))
            name = self.spec.resource_name(path)
            self.problems.append(Diagnostic(self.spec.path, line, col, field_path(path, keep=not name), message,
                                            name))

    def build(self, node: yaml.Node, path: Path_) -> Any:
        # Only what aliases add counts: a large file of plain values is bounded by the file
        # size limit, while a few lines of nested aliases can expand past any memory.
        if id(node) in self.built:
            self.count += 1
            if self.count > MAX_NODES:
                raise _TooLarge(node, f"the document expands to more than {MAX_NODES} values through "
                                      "aliases (an alias bomb?); expected a spec of ordinary size")
        else:
            self.built.add(id(node))
        if len(path) > MAX_DEPTH:
            raise _TooLarge(node, f"values nest more than {MAX_DEPTH} levels deep; expected a spec of ordinary shape")
        mark = node.start_mark
        self.spec.marks.setdefault(path, (mark.line + 1, mark.column + 1))
        if node.__class__ is yaml.ScalarNode:
            return self._scalar(node, path)
        if id(node) in self.active:
            self.problem(node, path, "an alias refers to the mapping or list that contains it (a recursive "
                                     "structure); expected a tree")
            return None
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                self.problem(node, path, f"the tag {node.tag} is not supported; expected a plain mapping")
            self.active.add(id(node))
            try:
                return self._mapping(node, path)
            finally:
                self.active.discard(id(node))
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                self.problem(node, path, f"the tag {node.tag} is not supported; expected a plain list")
            self.active.add(id(node))
            try:
                return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
            finally:
                self.active.discard(id(node))
        return self._scalar(node, path)

    def _scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        if node.tag not in (_STR, _INT, _FLOAT, _BOOL, _NULL):
            self.problem(node, path, f"the tag {node.tag} is not supported; expected plain text, a number or "
                                     "true/false")
            return None
        try:
            value = _core_value(node.tag, node.value)
        except ValueError:
            self.problem(node, path, f"{node.value!r} cannot be read as {node.tag.rsplit(':', 1)[-1]}")
            return None
        if not node.style and (not node.value or node.value[0] in _V11_FIRST):
            # plain (None, or "" from libyaml): the reader decided the type, and readers disagree
            why = _ambiguity(node.value, value)
            if why:
                self.problem(node, path, why)
                return node.value
        if isinstance(value, float) and not math.isfinite(value):
            self.problem(node, path, f"{node.value!r} is not a finite number; expected an ordinary number")
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # `<<: *base` merges first, so that keys given here win and keep their own positions;
        # of several merge sources, the earlier wins
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in reversed(sources):
                if not isinstance(source, yaml.MappingNode):
                    self.problem(source, path, "'<<' merges mappings only; expected an alias of a mapping")
                    continue
                merged = self.build(source, path)
                if isinstance(merged, dict):
                    out.update(merged)
        given: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, path, "a mapping key is a list or mapping; expected a plain field name")
                continue
            key = self._scalar(key_node, path)
            if not isinstance(key, str):
                self.problem(key_node, path, f"the key {key_node.value!r} is read as {_describe(key)}; "
                                             f"expected a field name (quote it: '{key_node.value}')")
                key = key_node.value
            line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key in given:
                first = self.spec.keys.get(path + (key,), (0, 0))[0]
                self.problem(key_node, path + (key,), f"duplicate key {key!r} (first given on line {first}); "
                                                      "YAML would silently keep only the last one")
                continue
            given.add(key)
            # the key's line: where an unknown or wrong field is best pointed at
            self.spec.marks[path + (key,)] = self.spec.keys[path + (key,)] = (line, col)
            out[key] = self.build(value_node, path + (key,))
            if isinstance(value_node, yaml.ScalarNode):
                self.spec.marks[path + (key,)] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1)
        return out


def read_file(path: str, problems: list[Diagnostic]) -> SpecFile | None:
    """Parse one file; on a problem that leaves nothing to check, report it and return None."""
    spec = SpecFile(path, None)
    try:
        with open(path, "rb") as fp:  # a pipe given by name is read too, so only as far as the limit
            raw = fp.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        problems.append(Diagnostic(path, 0, 0, "", f"cannot read file: {exc.strerror or exc}"))
        return None
    if len(raw) > MAX_FILE_BYTES:
        problems.append(Diagnostic(path, 1, 1, "", f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; "
                                                   "expected a spec of ordinary size"))
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        hint = " (it looks like UTF-16)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        problems.append(Diagnostic(path, line, col, "", f"byte 0x{raw[exc.start]:02x} is not valid UTF-8{hint}; "
                                                        "expected the file saved as UTF-8"))
        return None
    loader = None
    try:
        loader = _Loader(text)  # checks for unprintable characters at once
        node = loader.get_single_node()
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL):
            problems.append(Diagnostic(path, 1, 1, "", "the file is empty; expected a mapping with 'domains' "
                                                       "and/or 'pools'"))
            return None
        builder = _Builder(spec, problems)
        spec.data = builder.build(node, ())
        builder.finish()
    except _TooLarge as exc:
        mark = exc.node.start_mark
        problems.append(Diagnostic(path, mark.line + 1, mark.column + 1, "", exc.message))
        return None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        problems.append(Diagnostic(path, line, col, "", f"the character U+{exc.character:04X} is not allowed in "
                                                        "YAML; expected printable text"))
        return None
    except yaml.MarkedYAMLError as exc:
        problems.append(_syntax_problem(path, text, exc))
        return None
    except RecursionError:
        problems.append(Diagnostic(path, 1, 1, "", "values nest too deeply to read; expected a spec of ordinary "
                                                   "shape"))
        return None
    except yaml.YAMLError as exc:
        problems.append(Diagnostic(path, 1, 1, "", f"cannot read the YAML: {exc}"))
        return None
    finally:
        if loader is not None:
            loader.dispose()
    return spec


def _syntax_problem(path: str, text: str, exc: yaml.MarkedYAMLError) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = exc.problem or "invalid YAML"
    lines = text.split("\n")
    at = lines[mark.line][mark.column:mark.column + 1] if mark and mark.line < len(lines) else ""
    if at == "\t" or "'\\t'" in problem:
        what = "a tab character here; YAML indents and separates with spaces only, so replace the tab with spaces"
    elif "another document" in problem:
        what = "a second YAML document (---) starts here; expected one document per file, so split it into two files"
    elif "undefined alias" in problem or "undefined alias" in (exc.context or ""):
        name = re.match(r"\*([^\s,\]}]+)", lines[mark.line][mark.column:]) if mark and mark.line < len(lines) else None
        alias = f"*{name.group(1)}" if name else "this alias"
        what = f"{alias} refers to no anchor; expected &{alias.lstrip('*') if name else 'name'} defined earlier in the file"
    else:
        what = f"{exc.context}: {problem}" if exc.context else problem
        what = f"YAML syntax error: {what}"
    return Diagnostic(path, line, col, "", what)


def find_files(paths: Iterable[str]) -> tuple[list[str], list[Diagnostic]]:
    """The spec files of a run: those given, and every *.yaml / *.yml below a directory.

    Below a directory only regular files count: a FIFO named like a spec would block the
    read forever, a device would never end. A path given by name may also be a pipe (as
    `<(cat spec.yaml)` is), since then its writer is the user.
    """
    files: list[str] = []
    problems: list[Diagnostic] = []
    for p in paths:
        try:
            mode = os.stat(p).st_mode
        except OSError as exc:
            missing = isinstance(exc, FileNotFoundError)
            problems.append(Diagnostic(shown_path(p), 0, 0, "", "no such file or directory" if missing
                                       else f"cannot read: {exc.strerror or exc}"))
            continue
        if stat.S_ISDIR(mode):
            found: list[str] = []
            before = len(problems)
            for root, _dirs, names in os.walk(p):
                for name in names:
                    if not name.endswith(SUFFIXES) or name.startswith("."):
                        continue
                    full = os.path.join(root, name)
                    if os.path.isfile(full):
                        found.append(full)
                    else:
                        problems.append(Diagnostic(shown_path(full), 0, 0, "", "not a regular file (a pipe, device "
                                                   "or socket named like a spec); expected spec files only below "
                                                   "a directory"))
            if not found and len(problems) == before:
                problems.append(Diagnostic(shown_path(p), 0, 0, "", "directory holds no *.yaml or *.yml spec files"))
            files.extend(sorted(found))
        elif stat.S_ISREG(mode) or stat.S_ISFIFO(mode):
            files.append(p)
        else:
            problems.append(Diagnostic(shown_path(p), 0, 0, "", "not a regular file; expected a spec file, a "
                                                                "directory of them, or a pipe"))
    return list(dict.fromkeys(files)), problems


# ---------------------------------------------------------------- schema

@functools.lru_cache(maxsize=1)
def _quick_check() -> Callable[[Any], bool]:
    return compile_schema(load_schema(), FORMATS, _ecma)


def _schema_problems(spec: SpecFile) -> list[Diagnostic]:
    if _quick_check()(spec.data):
        return []  # nothing wrong: no need for jsonschema's reasons
    import jsonschema

    out: dict[tuple[Path_, str], Diagnostic] = {}
    by_path: dict[Path_, list[jsonschema.ValidationError]] = {}
    for error in _validator().iter_errors(spec.data):
        # oneOf/anyOf with a description of its own says more than the alternative that came closest
        described = error.validator in ("oneOf", "anyOf") and isinstance(error.schema, dict) \
            and "description" in error.schema
        best = error if described else jsonschema.exceptions.best_match([error])
        by_path.setdefault(tuple(best.absolute_path), []).append(best)
    for path, errors in by_path.items():
        if any(path[: len(b)] == b for b in spec.bad):
            continue  # the YAML reading already said what is wrong here
        # a format check says more than the pattern that mirrors it for editors
        if any(e.validator == "format" for e in errors):
            errors = [e for e in errors if e.validator != "pattern"]
        for error in errors:
            for where, message in _schema_messages(error):
                full = path + where
                out.setdefault((full, message), spec.diag(full, message, at_key=message.startswith("unknown field")))
    for full, _ in out:
        spec.bad.add(full)
    return list(out.values())


def _schema_messages(error: jsonschema.ValidationError) -> list[tuple[Path_, str]]:
    """What is wrong and what was expected, relative to the error's path."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    desc = schema.get("description", "")
    instance = error.instance
    v = error.validator
    if v == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(schema.get("properties", {}))
        out = []
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        for key in instance:
            if key in allowed or any(p.search(str(key)) for p in patterns):
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            extra = " (or x-NAME for anchors)" if "^x-" in schema.get("patternProperties", {}) else ""
            out.append(((key,), f"unknown field {key!r}; {hint}expected one of: {', '.join(allowed)}{extra}"))
        return out or [((), error.message)]
    if v == "required":
        return [((), f"missing required field {_missing(error)!r}")]
    if v == "format" and error.cause is not None:
        return [((), str(error.cause))]
    if v == "type" and schema.get("format") == "size" and isinstance(instance, (int, float)) \
            and not isinstance(instance, bool):
        return [((), f"{_show(instance)} has no unit; expected a size such as {instance}MiB or {instance}GiB "
                     "(a bare number could mean bytes, KiB or MiB)")]
    if v == "type":
        scalar = error.validator_value not in ("object", "array")
        what = "nothing is given" if instance is None else f"{_show(instance)} is {_kind(instance)}"
        return [((), f"{what}; expected {_article(error.validator_value)}"
                 + (f": {_lower(desc)}" if desc and scalar else ""))]
    if v == "enum":
        choices = [str(c) for c in error.validator_value]
        close = difflib.get_close_matches(str(instance), choices, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close and isinstance(instance, str) else ""
        return [((), f"{_show(instance)} is not allowed{hint}; expected one of: {', '.join(choices)}")]
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = "less than the minimum" if "inimum" in v else "more than the maximum"
        return [((), f"{_show(instance)} is {word} {error.validator_value}"
                 + (f"; expected {_lower(desc)}" if desc else ""))]
    if v == "uniqueItems" and isinstance(instance, list):
        seen: set[str] = set()
        for i, item in enumerate(instance):
            if repr(item) in seen:
                return [((i,), f"{_show(item)} is listed twice; expected each at most once")]
            seen.add(repr(item))
    if v == "minItems":
        return [((), f"the list is empty; expected at least {error.validator_value} item")]
    if v in ("oneOf", "anyOf"):
        return [((), f"{_show(instance)} is not valid; expected {_lower(desc) or 'a value the schema allows'}")]
    if v == "pattern" and isinstance(instance, str):
        return [((), f"{_show(instance)} is not valid; expected {_lower(desc)}" if desc else error.message)]
    if v == "const":
        return [((), f"{_show(instance)} is not allowed; expected {error.validator_value!r}")]
    return [((), error.message + (f"; expected {_lower(desc)}" if desc else ""))]


def _missing(error: jsonschema.ValidationError) -> str:
    match = re.match(r"'(.*)' is a required property", error.message)
    return match.group(1) if match else str(error.validator_value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _lower(text: str) -> str:
    """A description inside a sentence: 'Number of CPUs.' -> 'number of CPUs' (but 'TCP' stays)."""
    if text[:2].istitle() or len(text) < 2:
        text = text[:1].lower() + text[1:]
    return text.rstrip(".")


def _article(json_type: object) -> str:
    names = {"string": "a string", "integer": "a whole number", "number": "a number", "boolean": "true or false",
             "object": "a mapping", "array": "a list", "null": "nothing"}
    if isinstance(json_type, list):
        return " or ".join(names.get(t, t) for t in json_type)
    return names.get(str(json_type), str(json_type))


def _kind(value: Any) -> str:
    return {list: "a list", dict: "a mapping", str: "a string", int: "a whole number", float: "a number",
            bool: "a boolean", type(None): "empty"}.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- load

def load(paths: Iterable[str], project: str | None = None) -> Desired:
    """Load and check every spec file under `paths`; raise SpecError listing all problems."""
    paths = list(paths)
    files, problems = find_files(paths)
    parsed: list[SpecFile] = []
    for path in files:
        spec = read_file(path, problems)
        if spec is None:
            continue
        if not isinstance(spec.data, dict):
            problems.append(spec.diag((), f"the file holds {_kind(spec.data)}; expected a mapping with "
                                          "'domains' and/or 'pools' at the top"))
            continue
        problems.extend(_schema_problems(spec))
        parsed.append(spec)
    desired = _Build(parsed, problems).run(project, paths)
    if problems:
        raise SpecError(problems)
    return desired


class _Build:
    """Turns checked data into model objects, with the checks a schema cannot make.

    A resource whose own part of a file has problems is left out, but its name still
    counts, so that one mistake does not cascade into "undeclared" reports elsewhere.
    """

    def __init__(self, files: list[SpecFile], problems: list[Diagnostic]):
        self.files, self.problems = files, problems
        self.declared: dict[str, dict[str, str]] = {}  # kind -> name -> where
        self.references: list[tuple[str, str, Origin]] = []
        self.layers: dict[tuple[str, Path_], Layer] = {}
        self.macs: dict[str, str] = {}  # MAC -> the domain that has it
        self.images: dict[str, ImageSpec] = {}
        self.image_volumes: dict[tuple[str, str], str] = {}

    def run(self, project: str | None, paths: list[str]) -> Desired:
        project = self._project(project, paths)
        self._declare()
        pools = self._pools()
        networks = self._networks()
        self._images()  # before domains: a disk in any file may name an image as its backing
        domains = self._domains()
        expected = self._resolve_references()
        return Desired(project=project, domains=tuple(domains), pools=tuple(pools), networks=tuple(networks),
                       files=tuple(f.path for f in self.files), expected_on_host=tuple(expected),
                       images=tuple(self.images.values()), roots=tuple(os.path.abspath(p) for p in paths),
                       absolute_files=tuple(shown_path(os.path.abspath(f.path)) for f in self.files))

    def _project(self, project: str | None, paths: list[str]) -> str:
        projects: dict[str, SpecFile] = {}
        for f in self.files:
            if isinstance(f.data.get("project"), str) and not f.is_bad(("project",)):
                projects.setdefault(f.data["project"], f)
        if project is not None:
            for name, f in projects.items():
                if name != project:  # a typo in --project must not act on (or prune) another lab
                    self.problems.append(f.diag(("project",), f"the file says project {name!r}, but --project "
                                                              f"says {project!r}; expected them to agree (drop "
                                                              "--project, or change the file)"))
        if project is None:
            if len(projects) > 1:
                names = ", ".join(sorted(projects))
                for name, f in projects.items():
                    self.problems.append(f.diag(("project",), f"files disagree on the project ({names}); "
                                                              "expected one project per run (or --project)"))
            elif projects:
                project = next(iter(projects))
        if project is None:
            first = Path(paths[0]) if paths else Path.cwd()
            project = (first if first.is_dir() else first.parent).resolve().name or "default"
        return project

    def _declare(self) -> None:
        """The names each file declares, of every kind, for references to resolve against."""
        for kind in TOP_KINDS:
            names = self.declared.setdefault(kind, {})
            for f in self.files:
                for i, item in enumerate(_list(f.data.get(kind))):
                    if isinstance(item, dict) and isinstance(item.get("name"), str):
                        names.setdefault(item["name"], "{}:{}:{}".format(f.path, *f.mark((kind, i))))

    def _declared(self, kind: str, noun: str) -> Iterator[tuple[SpecFile, Path_, Origin, str, dict[str, Any]]]:
        """Each named item of a top-level list, once per name, skipping what the schema rejected.

        A second item of the same name is reported here (where both are), so no caller has
        to; an item with its own schema problems still counts as taken for that name.
        """
        names: dict[str, str] = {}
        for f in self.files:
            for i, item in enumerate(_list(f.data.get(kind))):
                base = (kind, i)
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    continue
                where = Origin(f.path, *f.mark(base))
                name = item["name"]
                if name in names:
                    self.problems.append(f.diag(base + ("name",), f"{noun} {name!r} is declared twice (also at "
                                                                  f"{names[name]}); expected unique {noun} names"))
                    continue
                names[name] = str(where)
                if not f.is_bad(base):
                    yield f, base, where, name, item

    def _pools(self) -> list[PoolSpec]:
        pools: list[PoolSpec] = []
        seen_path: dict[str, str] = {}
        for f, base, where, name, item in self._declared("pools", "pool"):
            path = os.path.normpath(item["path"])
            if path in seen_path:
                self.problems.append(f.diag(base + ("path",), f"pool path {path} is already the path of pool "
                                                              f"{seen_path[path]}; expected one pool per directory"))
                continue
            seen_path[path] = repr(name)
            pools.append(PoolSpec(name=name, path=path, origin=where))
        return pools

    def _networks(self) -> list[NetworkSpec]:
        networks: list[NetworkSpec] = []
        for f, base, where, name, item in self._declared("networks", "network"):
            if "dhcp" in item and "ip" not in item:
                self.problems.append(f.diag(base + ("dhcp",), "a DHCP range needs the network's own address; "
                                                              "expected 'ip' too"))
                continue
            dhcp = item.get("dhcp") or {}
            net = NetworkSpec(name=name, origin=where, mode=item.get("mode", "isolated"), bridge=item.get("bridge"),
                              ip=item.get("ip"), netmask=item.get("netmask"), dhcp_start=dhcp.get("start"),
                              dhcp_end=dhcp.get("end"))
            clash = self._network_clash(net, networks)
            if clash:
                self.problems.append(f.diag(base + (clash[0],), clash[1]))
                continue
            networks.append(net)
        return networks

    @staticmethod
    def _network_clash(net: NetworkSpec, earlier: list[NetworkSpec]) -> tuple[str, str] | None:
        """A field of `net` that an earlier network of the run already takes: its bridge, or
        a subnet that overlaps (libvirt starts only one of two such networks)."""
        mine = netxml.subnet(net.ip, net.netmask)
        for other in earlier:
            if net.bridge and other.bridge == net.bridge:
                return "bridge", (f"bridge {net.bridge!r} is also the bridge of network {other.name!r} (at "
                                  f"{other.origin}); expected a bridge of its own")
            theirs = netxml.subnet(other.ip, other.netmask)
            if mine is not None and theirs is not None and mine.overlaps(theirs):
                return "ip", (f"subnet {mine} overlaps {theirs} of network {other.name!r} (at {other.origin}); "
                              "expected networks with separate subnets")
        return None

    def _images(self) -> None:
        for f, base, where, name, item in self._declared("images", "image"):
            pool = item.get("pool", "default")
            self.references.append(("pools", pool, Origin(f.path, *f.mark(base + ("pool",)))))
            source = item["source"]
            if "://" not in source:
                # Not checked here: once imported, an image no longer needs its source.
                source = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(f.path)), source))
            self.images[name] = ImageSpec(name=name, pool=pool, source=source, origin=where,
                                          format=item.get("format", "qcow2"),
                                          sha256=item.get("sha256", "").lower() or None)
            self.image_volumes[(pool, name)] = f"image {name!r}"

    def _domains(self) -> list[DomainSpec]:
        profiles = self._profiles()
        dir_defaults = [(os.path.dirname(os.path.abspath(f.path)), f) for f in self.files
                        if os.path.basename(f.path) in DIRECTORY_DEFAULTS and isinstance(f.data.get("defaults"), dict)]
        domains: list[DomainSpec] = []
        seen_domain: dict[str, str] = {}
        seen_volume: dict[tuple[str, str], str] = dict(self.image_volumes)
        for f in self.files:
            layers: list[Layer] = []
            here = os.path.abspath(f.path)
            for directory, d in sorted(dir_defaults, key=lambda x: len(x[0])):
                if here.startswith(directory + os.sep) and d is not f:
                    layers.append(self._settings_layer(d, ("defaults",), "defaults"))
            if isinstance(f.data.get("defaults"), dict):
                layers.append(self._settings_layer(f, ("defaults",), "defaults"))
            shared_bad = any(layer.file.is_bad(layer.base) for layer in layers)
            for i, item in enumerate(_list(f.data.get("domains"))):
                base = ("domains", i)
                if not isinstance(item, dict):
                    continue
                own = Layer(f, base, item)
                tainted = shared_bad
                chosen = item.get("profile")
                for layer in reversed(layers):
                    if chosen is None and isinstance(layer.data.get("profile"), str):
                        chosen = layer.data["profile"]
                        chosen_at = layer
                        break
                else:
                    chosen_at = own
                stack = list(layers)
                if isinstance(chosen, str):
                    if chosen in profiles:
                        stack.append(profiles[chosen])
                    elif not chosen_at.file.is_bad(chosen_at.base + ("profile",)):
                        close = difflib.get_close_matches(chosen, list(profiles), n=1)
                        hint = f"did you mean {close[0]!r}? " if close else ""
                        known = ", ".join(repr(p) for p in sorted(profiles)) or "none"
                        self.problems.append(chosen_at.file.diag(
                            chosen_at.base + ("profile",),
                            f"there is no profile {chosen!r}; {hint}expected one declared under profiles "
                            f"(declared: {known})", resource=item.get("name") if isinstance(item.get("name"), str)
                            else ""))
                        tainted = True
                stack.append(own)
                merged = merge_layers(stack)
                bad = tainted or any(layer.file.is_bad(layer.base) for layer in stack)
                before = len(self.problems)
                for copy in self._copies(merged, quiet=bad):
                    name = copy.data.get("name")
                    if not isinstance(name, str):
                        continue
                    if name in seen_domain:
                        self.problems.append(copy.diag(("name",), f"domain {name!r} is declared twice (also at "
                                                                  f"{seen_domain[name]}); expected unique names"))
                        continue
                    seen_domain[name] = str(copy.origin)
                    if bad:
                        continue
                    domain = self._domain(copy, seen_volume)
                    if domain is not None:
                        domains.append(domain)
                if item.get("count", 1) != 1:
                    self.problems[before:] = _fold_copies(self.problems[before:], item.get("name"))
        return domains

    def _settings_layer(self, f: SpecFile, base: Path_, what: str, forbidden: tuple[str, ...] = ("name", "count")
                        ) -> Layer:
        cached = self.layers.get((f.path, base))
        if cached is not None:  # directory defaults serve many files; report their problems once
            return cached
        data = f.data
        for p in base:
            data = data[p]
        for key in forbidden:
            if key in data:
                self.problems.append(f.diag(base + (key,), f"{key!r} cannot be set in {what}; expected it on "
                                                           "each domain", at_key=True))
                f.bad.add(base + (key,))
        layer = self.layers[(f.path, base)] = Layer(f, base, data)
        return layer

    def _profiles(self) -> dict[str, Layer]:
        profiles: dict[str, Layer] = {}
        where: dict[str, str] = {}
        for f in self.files:
            items = f.data.get("profiles")
            if not isinstance(items, dict):
                continue
            for name, value in items.items():
                if not isinstance(value, dict):
                    continue
                base = ("profiles", name)
                if name in profiles:
                    self.problems.append(f.diag(base, f"profile {name!r} is declared twice (also at {where[name]}); "
                                                      "expected unique profile names across the files of a run"))
                    continue
                where[name] = "{}:{}:{}".format(f.path, *f.mark(base))
                profiles[name] = self._settings_layer(f, base, "a profile", ("name", "count", "profile"))
        return profiles

    def _copies(self, merged: Located, quiet: bool) -> list[Located]:
        """The domains one entry declares: itself, or `count` copies with {index} filled in."""
        item = merged.data
        name = item.get("name")
        count = item.get("count", 1)
        if not isinstance(name, str) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
            return []  # the schema has said what is wrong
        if count > 1 and not has_index(name):
            if quiet:
                return []
            self.problems.append(merged.diag(("count",), f"count is {count} but the name {name!r} has no {{index}}; "
                                                         "expected a name such as "
                                                         f"'{name}{{index}}' so every copy has its own",
                                             resource=name))
            return []
        copies = []
        for index in range(1, count + 1):
            copy = expand_index(merged, index)
            try:
                check_name(copy.data["name"])
            except ValueError as exc:
                if not quiet:
                    self.problems.append(copy.diag(("name",), str(exc)))
                return []
            copies.append(copy)
        return copies

    def _domain(self, item: Located, seen_volume: dict[tuple[str, str], str]) -> DomainSpec | None:
        data = item.data
        before = len(self.problems)

        def problem(path: Path_, message: str) -> None:
            self.problems.append(item.diag(path, message))

        def size(path: Path_, whole_mib: bool, limit: int) -> int | None:
            value = _at(data, path)
            try:
                n = parse_size(value)
            except ValueError as exc:
                problem(path, str(exc))
                return None
            if n <= 0:
                problem(path, f"{value!r} is zero; expected a positive size")
                return None
            if whole_mib and n % (1024 * 1024):
                problem(path, f"{value!r} is not a whole number of MiB; libvirt would round it, so write e.g. "
                              f"{max(1, n // (1024 * 1024))}MiB")
                return None
            if n > limit:
                problem(path, f"{value!r} is more than {_bytes(limit)}; is the unit right?")
                return None
            return n

        if "memory" not in data:
            problem((), "no memory given; expected memory here, in the domain's profile or in the defaults")
            return None
        memory = size(("memory",), True, MAX_MEMORY)
        current = size(("current_memory",), True, MAX_MEMORY) if "current_memory" in data else None
        if memory and current and current > memory:
            problem(("current_memory",), f"{data['current_memory']!r} is more than memory ({data['memory']}); "
                                         "expected at most memory")

        all_devices = list(data.get("disks", [])) + list(data.get("cdroms", []))
        explicit = {x["target"] for x in all_devices if x.get("target")}
        used_targets: set[str] = set()

        def target_of(j: int, kind: str, dev: dict[str, Any], prefix: str) -> str:
            if "target" in dev:
                target = dev["target"]
                if target in used_targets:
                    problem((kind, j, "target"), f"target {target!r} is used twice in this domain; expected each "
                                                 "device on its own target")
                    return ""
            else:
                target = _next_target(prefix, used_targets | explicit)
                if target is None:
                    problem((kind, j), f"no free {prefix}X target is left on this bus; expected at most 26 devices")
                    target = f"{prefix}?{j}"
            used_targets.add(target)
            return target

        disks: list[Disk] = []
        for j, d in enumerate(data.get("disks", [])):
            bus = d.get("bus", "virtio")
            target = target_of(j, "disks", d, _DISK_PREFIX[bus])
            if not target:
                continue
            fmt = d.get("format", "qcow2")
            pool = d.get("pool", "default")
            backing = _backing(d["backing"], pool, self.images) if "backing" in d else None
            if backing is not None and fmt != "qcow2":
                problem(("disks", j, "format"), f"{fmt!r} cannot be an overlay; expected qcow2 for a disk with "
                                                "backing")
            if "size" in d:
                capacity = size(("disks", j, "size"), False, MAX_DISK)
                if capacity is None:
                    continue
            elif backing is None:
                problem(("disks", j), "no size given; expected size (only an overlay, with backing, may leave it "
                                      "out to have the size of its base)")
                continue
            else:
                capacity = None
            volume = d.get("name") or f"{data['name']}-{target}.{'qcow2' if fmt == 'qcow2' else 'img'}"
            if "name" in d:
                try:
                    check_name(volume)
                except ValueError as exc:
                    problem(("disks", j, "name"), str(exc))
            key = (pool, volume)
            if key in seen_volume:
                problem(("disks", j), f"volume {pool}/{volume} is already used by {seen_volume[key]}; expected "
                                      "each disk to have its own volume (give it a name)")
            seen_volume[key] = f"domain {data['name']!r}"
            if backing is not None and backing.kind != "path" and (backing.pool, backing.name) == key:
                problem(("disks", j, "backing"), "a disk cannot be its own backing image; expected another volume")
            disks.append(Disk(target=target, pool=pool, volume=volume, size=capacity, format=fmt, bus=bus,
                              keep=d.get("keep", False), backing=backing,
                              allow_replace=d.get("allow_replace", False)))

        cdroms: list[Cdrom] = []
        for j, c in enumerate(data.get("cdroms", [])):
            bus = c.get("bus", "sata")
            target = target_of(j, "cdroms", c, "hd" if bus == "ide" else "sd")
            cdroms.append(Cdrom(target=target, path=os.path.normpath(c["path"]), bus=bus))

        seed = None
        if "cloud_init" in data:
            ci = data["cloud_init"]
            pool = ci.get("pool") or (disks[0].pool if disks else "default")
            volume = f"{data['name']}-cidata.iso"
            if (pool, volume) in seen_volume:
                problem(("cloud_init",), f"volume {pool}/{volume} is already used by {seen_volume[(pool, volume)]}; "
                                         "expected the seed to have its own volume")
            seen_volume[(pool, volume)] = f"the cloud-init seed of domain {data['name']!r}"
            seed = self._seed(item, data["name"], ci, pool, volume)
            target = _next_target("sd", used_targets | explicit)
            if target is None:
                problem(("cloud_init",), "no free sdX target is left for the seed's cdrom; expected at most 26 devices")
            else:
                used_targets.add(target)
                cdroms.append(Cdrom(target=target, path=None, bus="sata", pool=pool, volume=volume))

        boot = data.get("boot")
        known = _domain_fields()
        for j, dev in enumerate(boot or ()):
            holder = BOOT_DEVICES.get(dev)
            left_out_ok = holder in UNMANAGED_WHEN_LEFT_OUT and holder not in data
            if holder and holder in known and not data.get(holder) and not left_out_ok:
                problem(("boot", j), f"boot from {dev} but the domain has no {holder}; expected a device to boot "
                                     f"from (add one to {holder} or remove {dev!r} from boot)")

        for kind, path, default in REFERENCES:
            for where, value in _values_at(data, path, default):
                self.references.append((kind, value, item.origin_of(where)))

        graphics = None
        if "graphics" in data:
            g = data["graphics"]
            port = g.get("port", "auto")
            graphics = Graphics(type=g.get("type", "vnc"), listen=g.get("listen"), port=None if port == "auto" else port)

        if "max_vcpus" in data and data["max_vcpus"] < data.get("vcpus", 1):
            problem(("max_vcpus",), f"{data['max_vcpus']} is less than vcpus ({data.get('vcpus', 1)}); "
                                    "expected at least vcpus")
        interfaces = None
        if "interfaces" in data:
            interfaces = tuple(Interface(network=n["network"], model=n.get("model", "virtio"),
                                         mac=n["mac"].lower() if "mac" in n else None) for n in data["interfaces"])
            for j, n in enumerate(interfaces):
                if not n.mac:
                    continue
                if n.mac in self.macs:
                    problem(("interfaces", j, "mac"), f"MAC {n.mac} is already used by {self.macs[n.mac]}; expected "
                                                      "each interface to have its own (or leave mac out)")
                self.macs.setdefault(n.mac, f"domain {data['name']!r}")

        console = None
        if "console" in data:
            log = data["console"].get("log")
            console = Console(log=os.path.normpath(log) if log else None)

        if len(self.problems) > before or memory is None:
            return None
        return DomainSpec(
            name=data["name"],
            memory=memory // 1024,
            current_memory=current // 1024 if current else None,
            vcpus=data.get("vcpus", 1),
            origin=item.origin,
            type=data.get("type", "kvm"),
            arch=data.get("arch", "x86_64"),
            machine=data.get("machine"),
            boot=tuple(boot) if boot else None,
            disks=tuple(disks),
            cdroms=tuple(cdroms),
            graphics=graphics,
            interfaces=interfaces,
            console=console,
            autostart=data.get("autostart", False),
            on_change=data.get("on_change", "defer"),
            max_vcpus=data.get("max_vcpus"),
            state=State(data.get("state", "running")),
            stop_timeout=float(data.get("stop_timeout", DEFAULT_STOP_TIMEOUT)),
            seed=seed,
        )

    def _seed(self, item: Located, domain: str, ci: dict[str, Any], pool: str, volume: str) -> Seed | None:
        """The seed's files. The instance-id derives from the content (unless meta_data sets one),
        so changing user-data gives a new instance-id and cloud-init runs again at the next boot."""
        contents: dict[str, bytes] = {}
        for key, name, header in (("user_data", "user-data", "#cloud-config\n"),
                                  ("network_config", "network-config", "")):
            if key not in ci:
                continue
            value = ci[key]
            if isinstance(value, dict):
                contents[name] = (header + yaml.safe_dump(value, sort_keys=False, default_flow_style=False)).encode()
            elif "\n" in value:  # a block of text (`|`): the file's content as it is
                contents[name] = value.encode()
            else:
                data = self._read_beside(item, ("cloud_init", key), value)
                if data is None:
                    return None
                contents[name] = data
        meta: dict[str, Any] = {}
        if "meta_data" in ci:
            value = ci["meta_data"]
            path = ("cloud_init", "meta_data")
            if isinstance(value, dict):
                meta = dict(value)
            else:
                data = value.encode() if "\n" in value else self._read_beside(item, path, value)
                if data is None:
                    return None
                try:
                    meta = yaml.safe_load(data) or {}
                except yaml.YAMLError as exc:
                    self.problems.append(item.diag(path, f"not valid YAML ({exc}); expected a YAML mapping"))
                    return None
                if not isinstance(meta, dict):
                    self.problems.append(item.diag(path, f"holds {_kind(meta)}; expected a YAML mapping"))
                    return None
        digest = hashlib.sha256()
        for name in ("user-data", "network-config"):
            digest.update(name.encode() + b"\0" + contents.get(name, b"") + b"\0")
        digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
        instance_id = str(meta.get("instance-id") or f"{domain}-{digest.hexdigest()[:12]}")
        meta = {"instance-id": instance_id, "local-hostname": meta.get("local-hostname", domain),
                **{k: v for k, v in meta.items() if k not in ("instance-id", "local-hostname")}}
        contents["meta-data"] = yaml.safe_dump(meta, sort_keys=False, default_flow_style=False).encode()
        if "user-data" not in contents:  # NoCloud wants the file, even empty
            contents["user-data"] = b"#cloud-config\n"
        files = tuple((name, contents[name]) for name in ("meta-data", "user-data", "network-config") if name in contents)
        whole = hashlib.sha256(b"".join(n.encode() + b"\0" + d + b"\0" for n, d in files)).hexdigest()
        return Seed(pool=pool, volume=volume, files=files, digest="sha256:" + whole, instance_id=instance_id)

    def _read_beside(self, item: Located, path: Path_, value: str) -> bytes | None:
        """A file a spec names, relative to the file that set the field."""
        source, _ = item.where(path)
        full = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(source.path)), value))
        try:
            data = Path(full).read_bytes()
        except OSError as exc:
            self.problems.append(item.diag(path, f"cannot read {full}: {exc.strerror or exc}; expected a file "
                                                 "beside the spec, a block of text or a mapping"))
            return None
        if len(data) > 4 * 1024 * 1024:
            self.problems.append(item.diag(path, f"{full} is larger than 4 MiB; expected a small file "
                                                 "(cloud-init seeds are meant to be small)"))
            return None
        return data

    def _resolve_references(self) -> list[Reference]:
        """References to resources not declared in the specs: those must exist on the host."""
        expected: dict[tuple[str, str], Reference] = {}
        for kind, name, origin in self.references:
            declared = self.declared.get(kind, {})
            if name in declared or (kind, name) in expected:
                continue
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f"did you mean {close[0]!r}, declared at {declared[close[0]]}?" if close else ""
            expected[(kind, name)] = Reference(kind=kind.rstrip("s"), name=name, origin=origin, hint=hint)
        return sorted(expected.values(), key=lambda r: (r.kind, r.name))


def _fold_copies(problems: list[Diagnostic], template: Any) -> list[Diagnostic]:
    """One message for a problem every copy of a `count` entry shares, not one per copy."""
    groups: dict[tuple[Any, ...], list[Diagnostic]] = {}
    for d in problems:
        groups.setdefault((d.file, d.line, d.column, d.field, d.message), []).append(d)
    out = []
    for (file, line, col, fld, message), same in groups.items():
        if len(same) == 1 or not isinstance(template, str):
            out.extend(same)
            continue
        names = [d.resource for d in same]
        shown = ", ".join(names) if len(names) <= 4 else f"{names[0]}, {names[1]}, ... {names[-1]}"
        out.append(Diagnostic(file, line, col, fld, f"{message} (in {len(names)} copies: {shown})", template))
    return out


def _backing(value: str, pool: str, images: dict[str, ImageSpec]) -> Backing:
    """`backing:` names a declared image, else a path (absolute), else a volume in the disk's pool."""
    if value in images:
        return Backing("image", images[value].pool, value)
    if value.startswith("/"):
        return Backing("path", path=os.path.normpath(value))
    return Backing("volume", pool, value)


_DISK_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd", "usb": "sd", "ide": "hd"}


def _next_target(prefix: str, used: set[str]) -> str | None:
    for letter in "abcdefghijklmnopqrstuvwxyz":
        if prefix + letter not in used:
            return prefix + letter
    return None


def _bytes(n: int) -> str:
    for unit, factor in (("PiB", 1024**5), ("TiB", 1024**4), ("GiB", 1024**3)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _at(data: Any, path: Path_) -> Any:
    for p in path:
        data = data[p]
    return data


def _values_at(data: Any, path: tuple[str, ...], default: str | None) -> list[tuple[Path_, str]]:
    """Every value at `path` ("*" for each list item), with the default where it is left out."""
    found: list[tuple[Path_, str]] = []
    _walk(data, path, (), default, found)
    return found


def _walk(node: Any, rest: tuple[str, ...], where: Path_, default: str | None, found: list[tuple[Path_, str]]) -> None:
    # not nested in _values_at: a nested function that calls itself is a reference cycle
    if not rest:
        if isinstance(node, str):
            found.append((where, node))
        return
    head, tail = rest[0], rest[1:]
    if head == "*":
        for i, child in enumerate(_list(node)):
            _walk(child, tail, where + (i,), default, found)
    elif isinstance(node, dict):
        if head in node:
            _walk(node[head], tail, where + (head,), default, found)
        elif not tail and default is not None:
            found.append((where, default))


def dump(doc: dict[str, Any]) -> str:
    """A spec document as YAML, keys in the order given (export writes them as a person would)."""
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)
