"""Load spec files into `Desired`: YAML with source positions, JSON Schema, semantic checks.

Every problem in every file is collected and reported together, each located at the line
and column of the YAML node it concerns. Nothing here talks to libvirt: specs are valid
before the host is looked at. This is the only module that imports yaml and jsonschema.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import Diagnostic, SpecError
from .model import (DEFAULT_STOP_TIMEOUT, Cdrom, Desired, Disk, DomainSpec, Graphics, Interface, NetworkSpec, Origin,
                    PoolSpec, State)
from .units import parse_size

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SPEC_SCHEMA = SCHEMA_DIR / "spec.schema.json"
SUFFIXES = (".yaml", ".yml")
MAX_NODES = 100_000  # an alias bomb expands past this long before memory runs out
MAX_FILE_BYTES = 10 * 1024 * 1024

Path_ = tuple[Any, ...]


def load_schema() -> dict[str, Any]:
    with open(SPEC_SCHEMA, encoding="utf-8") as f:
        return json.load(f)


@dataclass
class SpecFile:
    """One parsed file: plain data plus the position of every node, keyed by its path."""

    path: str
    data: Any
    marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def mark(self, path: Iterable[Any]) -> tuple[int, int]:
        """Position of the node at `path`, or of its nearest ancestor that has one."""
        key = tuple(path)
        while key not in self.marks and key:
            key = key[:-1]
        return self.marks.get(key, (1, 1))

    def resource_name(self, path: Iterable[Any]) -> str:
        key = tuple(path)
        if len(key) >= 2 and key[0] in ("domains", "pools", "networks") and isinstance(self.data, dict):
            items = self.data.get(key[0])
            if isinstance(items, list) and isinstance(key[1], int) and key[1] < len(items):
                item = items[key[1]]
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    return item["name"]
        return ""

    def diag(self, path: Iterable[Any], message: str) -> Diagnostic:
        path = tuple(path)
        line, col = self.mark(path)
        return Diagnostic(self.path, line, col, field_path(path), message, self.resource_name(path))


def field_path(path: Path_) -> str:
    """`('domains', 0, 'disks', 1, 'size')` -> `disks[1].size` (the resource is named apart)."""
    parts = list(path)
    if len(parts) >= 2 and parts[0] in ("domains", "pools", "networks") and isinstance(parts[1], int):
        parts = parts[2:]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class _Builder:
    """Turns a composed YAML node tree into plain data, recording marks and rejecting traps."""

    def __init__(self, spec: SpecFile, loader: yaml.SafeLoader, problems: list[Diagnostic]):
        self.spec, self.loader, self.problems = spec, loader, problems
        self.count = 0

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooLarge(node)
        self.spec.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            self.loader.flatten_mapping(node)
            for key_node, value_node in node.value:
                key = self.build(key_node, path + ("<key>",))
                if not isinstance(key, str):
                    self.problems.append(Diagnostic(self.spec.path, key_node.start_mark.line + 1,
                                                    key_node.start_mark.column + 1, field_path(path),
                                                    f"mapping keys must be strings, got {key!r}"))
                    key = str(key)
                if key in out:
                    line = key_node.start_mark.line + 1
                    first = self.spec.marks.get(path + (key,), (0, 0))[0]
                    self.problems.append(Diagnostic(self.spec.path, line, key_node.start_mark.column + 1,
                                                    field_path(path + (key,)),
                                                    f"duplicate key {key!r} (first given on line {first}); "
                                                    "YAML would silently keep only the last one"))
                    continue
                self.spec.marks[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = self.build(value_node, path + (key,))
                # the value's own mark is more useful for errors about its content
                if not isinstance(value_node, yaml.ScalarNode):
                    self.spec.marks[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)


class _TooLarge(Exception):
    def __init__(self, node: yaml.Node):
        self.node = node


def read_file(path: str, problems: list[Diagnostic]) -> SpecFile | None:
    """Parse one file; on any YAML problem, add a located diagnostic and return None."""
    spec = SpecFile(path, None)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        problems.append(Diagnostic(path, 0, 0, "", f"cannot read file: {exc.strerror or exc}"))
        return None
    if len(raw) > MAX_FILE_BYTES:
        problems.append(Diagnostic(path, 0, 0, "", f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; is it really a spec?"))
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        problems.append(Diagnostic(path, line, 1, "", f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the file as UTF-8"))
        return None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            problems.append(Diagnostic(path, 1, 1, "", "file is empty; expected a mapping with 'domains' and/or 'pools'"))
            return None
        spec.data = _Builder(spec, loader, problems).build(node, ())
    except _TooLarge as exc:
        mark = exc.node.start_mark
        problems.append(Diagnostic(path, mark.line + 1, mark.column + 1, "",
                                   f"document expands to more than {MAX_NODES} nodes (an alias bomb?)"))
        return None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = exc.problem or "invalid YAML"
        if exc.context:
            what = f"{exc.context}: {what}"
        problems.append(Diagnostic(path, line, col, "", f"YAML syntax error: {what}"))
        return None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        problems.append(Diagnostic(path, 0, 0, "", f"cannot parse YAML: {exc}"))
        return None
    finally:
        loader.dispose()
    return spec


def find_files(paths: Iterable[str]) -> tuple[list[str], list[Diagnostic]]:
    files: list[str] = []
    problems: list[Diagnostic] = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(
                os.path.join(root, name)
                for root, dirs, names in os.walk(p)
                for name in names
                if name.endswith(SUFFIXES) and not name.startswith(".")
            )
            if not found:
                problems.append(Diagnostic(p, 0, 0, "", "directory holds no *.yaml or *.yml spec files"))
            files.extend(found)
        elif os.path.isfile(p):
            files.append(p)
        else:
            problems.append(Diagnostic(p, 0, 0, "", "no such file or directory"))
    return list(dict.fromkeys(files)), problems


def _schema_problems(spec: SpecFile, validator: jsonschema.protocols.Validator) -> list[Diagnostic]:
    out = []
    for error in validator.iter_errors(spec.data):
        # oneOf/anyOf: the most specific sub-error says more than "is not valid under any"
        best = jsonschema.exceptions.best_match([error])
        path = tuple(best.absolute_path)
        out.append(spec.diag(path, _schema_message(best)))
    return out


def _schema_message(error: jsonschema.ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"{error.message}; expected one of: {', '.join(allowed)}"
    if error.validator == "pattern" and "description" in schema:
        return f"{error.instance!r} is not valid; expected {_lower(schema['description'])}"
    if error.validator == "type" and "description" in schema:
        return f"{error.instance!r} is {_kind(error.instance)}, not {_article(error.validator_value)}; expected {_lower(schema['description'])}"
    return error.message


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


def _article(json_type: object) -> str:
    names = {"string": "a string", "integer": "a whole number", "number": "a number", "boolean": "true or false",
             "object": "a mapping", "array": "a list"}
    if isinstance(json_type, list):
        return " or ".join(names.get(t, t) for t in json_type)
    return names.get(str(json_type), str(json_type))


def load(paths: Iterable[str], project: str | None = None) -> Desired:
    """Load and check every spec file under `paths`; raise SpecError listing all problems."""
    paths = list(paths)
    files, problems = find_files(paths)
    validator_cls = jsonschema.validators.validator_for(load_schema())
    validator = validator_cls(load_schema())
    parsed: list[SpecFile] = []
    for path in files:
        spec = read_file(path, problems)
        if spec is None:
            continue
        if not isinstance(spec.data, dict):
            problems.append(spec.diag((), f"expected a mapping with 'domains' and/or 'pools' at the top, got {_kind(spec.data)}"))
            continue
        schema_problems = _schema_problems(spec, validator)
        problems.extend(schema_problems)
        if not schema_problems:
            parsed.append(spec)
    desired = _build(parsed, problems, project, paths)
    if problems:
        raise SpecError(problems)
    return desired


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(type(value), type(value).__name__)


_DISK_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd", "usb": "sd", "ide": "hd"}


def _next_target(prefix: str, used: set[str]) -> str:
    for letter in "abcdefghijklmnopqrstuvwxyz":
        if prefix + letter not in used:
            return prefix + letter
    raise ValueError("more than 26 devices on one bus")


def _build(files: list[SpecFile], problems: list[Diagnostic], project: str | None, paths: list[str]) -> Desired:
    """Turn schema-valid data into model objects, with the checks a schema cannot make."""
    projects = {}
    for f in files:
        if "project" in f.data:
            projects.setdefault(f.data["project"], f)
    if project is None:
        if len(projects) > 1:
            names = ", ".join(sorted(projects))
            for name, f in projects.items():
                problems.append(f.diag(("project",), f"files disagree on the project ({names}); use one project per run or --project"))
        elif projects:
            project = next(iter(projects))
    if project is None:
        first = Path(paths[0]) if paths else Path.cwd()
        project = (first if first.is_dir() else first.parent).resolve().name or "default"

    pools: list[PoolSpec] = []
    networks: list[NetworkSpec] = []
    seen_network: dict[str, str] = {}
    domains: list[DomainSpec] = []
    seen_pool: dict[str, str] = {}
    seen_domain: dict[str, str] = {}
    seen_volume: dict[tuple[str, str], str] = {}
    for f in files:
        for i, item in enumerate(f.data.get("pools", [])):
            where = Origin(f.path, *f.mark(("pools", i)))
            if item["name"] in seen_pool:
                problems.append(f.diag(("pools", i, "name"), f"pool {item['name']!r} is declared twice (also at {seen_pool[item['name']]})"))
                continue
            seen_pool[item["name"]] = str(where)
            pools.append(PoolSpec(name=item["name"], path=os.path.normpath(item["path"]), origin=where))
        for i, item in enumerate(f.data.get("networks", [])):
            where = Origin(f.path, *f.mark(("networks", i)))
            if item["name"] in seen_network:
                problems.append(f.diag(("networks", i, "name"), f"network {item['name']!r} is declared twice (also at {seen_network[item['name']]})"))
                continue
            seen_network[item["name"]] = str(where)
            if "dhcp" in item and "ip" not in item:
                problems.append(f.diag(("networks", i, "dhcp"), "a DHCP range needs the network's own address; add 'ip'"))
                continue
            dhcp = item.get("dhcp") or {}
            networks.append(NetworkSpec(name=item["name"], origin=where, mode=item.get("mode", "isolated"),
                                        bridge=item.get("bridge"), ip=item.get("ip"), netmask=item.get("netmask"),
                                        dhcp_start=dhcp.get("start"), dhcp_end=dhcp.get("end")))
        for i, item in enumerate(f.data.get("domains", [])):
            where = Origin(f.path, *f.mark(("domains", i)))
            name = item["name"]
            if name in seen_domain:
                problems.append(f.diag(("domains", i, "name"), f"domain {name!r} is declared twice (also at {seen_domain[name]})"))
                continue
            seen_domain[name] = str(where)
            domain = _domain(f, i, item, where, problems, seen_volume)
            if domain is not None:
                domains.append(domain)
    return Desired(project=project, domains=tuple(domains), pools=tuple(pools), networks=tuple(networks),
                   files=tuple(f.path for f in files))


def _domain(f: SpecFile, i: int, item: dict[str, Any], where: Origin, problems: list[Diagnostic],
            seen_volume: dict[tuple[str, str], str]) -> DomainSpec | None:
    base = ("domains", i)
    before = len(problems)

    def size(key: str, path: Path_, whole_mib: bool) -> int | None:
        value = item_at(item, path)
        try:
            n = parse_size(value)
        except ValueError as exc:
            problems.append(f.diag(base + path, str(exc)))
            return None
        if n <= 0:
            problems.append(f.diag(base + path, f"{value!r} is zero; expected a positive size"))
            return None
        if whole_mib and n % (1024 * 1024):
            problems.append(f.diag(base + path, f"{value!r} is not a whole number of MiB; libvirt would round it, so write e.g. {max(1, n // (1024 * 1024))}MiB"))
            return None
        if n > 16 * 1024**5:
            problems.append(f.diag(base + path, f"{value!r} is larger than 16PiB; is the unit right?"))
            return None
        return n

    memory = size("memory", ("memory",), True)
    current = size("current_memory", ("current_memory",), True) if "current_memory" in item else None
    if memory and current and current > memory:
        problems.append(f.diag(base + ("current_memory",), f"{item['current_memory']!r} is more than memory ({item['memory']}); expected at most memory"))

    used_targets: set[str] = set()
    disks: list[Disk] = []
    for j, d in enumerate(item.get("disks", [])):
        bus = d.get("bus", "virtio")
        if "target" in d:
            target = d["target"]
            if target in used_targets:
                problems.append(f.diag(base + ("disks", j, "target"), f"target {target!r} is used twice in this domain"))
        else:
            target = _next_target(_DISK_PREFIX[bus], used_targets | {x.get("target") for x in item.get("disks", []) + item.get("cdroms", []) if x.get("target")})
        used_targets.add(target)
        fmt = d.get("format", "qcow2")
        capacity = size("size", ("disks", j, "size"), False)
        volume = d.get("name") or f"{item['name']}-{target}.{'qcow2' if fmt == 'qcow2' else 'img'}"
        pool = d.get("pool", "default")
        key = (pool, volume)
        if key in seen_volume:
            problems.append(f.diag(base + ("disks", j), f"volume {pool}/{volume} is already used by {seen_volume[key]}; give this disk its own name"))
        seen_volume[key] = f"domain {item['name']!r}"
        if capacity is not None:
            disks.append(Disk(target=target, pool=pool, volume=volume, size=capacity, format=fmt, bus=bus, keep=d.get("keep", False)))

    cdroms: list[Cdrom] = []
    for j, c in enumerate(item.get("cdroms", [])):
        bus = c.get("bus", "sata")
        if "target" in c:
            target = c["target"]
            if target in used_targets:
                problems.append(f.diag(base + ("cdroms", j, "target"), f"target {target!r} is used twice in this domain"))
        else:
            target = _next_target("hd" if bus == "ide" else "sd", used_targets | {x.get("target") for x in item.get("disks", []) + item.get("cdroms", []) if x.get("target")})
        used_targets.add(target)
        cdroms.append(Cdrom(target=target, path=os.path.normpath(c["path"]), bus=bus))

    boot = item.get("boot")
    for j, dev in enumerate(boot or ()):
        if dev == "cdrom" and not item.get("cdroms"):
            problems.append(f.diag(base + ("boot", j), "boot from cdrom but the domain has no cdroms; add one or remove 'cdrom'"))
        if dev == "hd" and not item.get("disks"):
            problems.append(f.diag(base + ("boot", j), "boot from hd but the domain has no disks; add one or remove 'hd'"))

    graphics = None
    if "graphics" in item:
        g = item["graphics"]
        port = g.get("port", "auto")
        graphics = Graphics(type=g.get("type", "vnc"), listen=g.get("listen"), port=None if port == "auto" else port)

    if "max_vcpus" in item and item["max_vcpus"] < item.get("vcpus", 1):
        problems.append(f.diag(base + ("max_vcpus",), f"{item['max_vcpus']} is less than vcpus ({item.get('vcpus', 1)}); "
                               "expected at least vcpus"))
    interfaces = None
    if "interfaces" in item:
        interfaces = tuple(Interface(network=n["network"], model=n.get("model", "virtio"),
                                     mac=n["mac"].lower() if "mac" in n else None) for n in item["interfaces"])
        macs = [n.mac for n in interfaces if n.mac]
        for j, n in enumerate(interfaces):
            if n.mac and macs.count(n.mac) > 1:
                problems.append(f.diag(base + ("interfaces", j, "mac"), f"MAC {n.mac} is used twice in this domain"))

    if len(problems) > before or memory is None:
        return None
    return DomainSpec(
        name=item["name"],
        memory=memory // 1024,
        current_memory=current // 1024 if current else None,
        vcpus=item.get("vcpus", 1),
        origin=where,
        type=item.get("type", "kvm"),
        arch=item.get("arch", "x86_64"),
        machine=item.get("machine"),
        boot=tuple(boot) if boot else None,
        disks=tuple(disks),
        cdroms=tuple(cdroms),
        graphics=graphics,
        interfaces=interfaces,
        autostart=item.get("autostart", False),
        on_change=item.get("on_change", "defer"),
        max_vcpus=item.get("max_vcpus"),
        state=State(item.get("state", "running")),
        stop_timeout=float(item.get("stop_timeout", DEFAULT_STOP_TIMEOUT)),
    )


def item_at(item: dict[str, Any], path: Path_) -> Any:
    value: Any = item
    for p in path:
        value = value[p]
    return value


def dump(doc: dict[str, Any]) -> str:
    """A spec document as YAML, keys in the order given (export writes them as a person would)."""
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)
