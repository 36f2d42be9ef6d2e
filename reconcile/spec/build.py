"""Checked spec data into the model: the run's project, pools, networks, images and domains
(through defaults, profiles and `count`), with the checks that span files, and the
references left for the host to satisfy.

A resource whose own part of a file has problems is left out, but its name still counts,
so that one mistake does not cascade into "undeclared" reports elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..codec import network as netxml
from ..errors import Diagnostic, SpecError, shown_path
from ..model import Desired, DomainSpec, ImageSpec, NetworkSpec, Origin, PoolSpec, Reference
from .domain import DomainReader
from .files import find_files, read_file
from .formats import check_name, closest
from .layers import DIRECTORY_DEFAULTS, Layer, Located, expand_index, has_index, merge_layers
from .paths import at, list_of
from .placement import UNKNOWN, Placement
from .schema import _kind, _schema_problems
from .seen import Seen
from .source import TOP_KINDS, Path_, SpecFile

MAX_COUNT = 1000  # as in the schema; checked again so that a huge count is never expanded


def load(paths: Iterable[str], project: str | None = None, resolve_secrets: bool = True) -> Desired:
    """Load and check every spec file under `paths`; raise SpecError listing all problems.
    `resolve_secrets`: read the environment variables and files cloud-init secrets name
    (see `secrets`); without it (validate) their form is checked and placeholders used."""
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
    desired = ModelBuilder(parsed, problems, resolve_secrets).run(project, paths)
    if problems:
        raise SpecError(problems)
    return desired


class ModelBuilder:
    """Turns checked data into model objects, with the checks a schema cannot make.

    A resource whose own part of a file has problems is left out, but its name still
    counts, so that one mistake does not cascade into "undeclared" reports elsewhere.
    """

    def __init__(self, files: list[SpecFile], problems: list[Diagnostic], resolve_secrets: bool = True):
        self.files, self.problems, self.resolve_secrets = files, problems, resolve_secrets
        self.declared: dict[str, dict[str, str]] = {}  # kind -> name -> where
        self.seen = Seen()  # names, volumes, MACs and references, across files
        self.layers: dict[tuple[str, Path_], Layer] = {}
        self.images_on: dict[str | None, dict[str, ImageSpec]] = {}  # host -> name -> image
        self.image_volumes: dict[tuple[str, str], str] = {}

    def run(self, project: str | None, paths: list[str]) -> Desired:
        project = self.project = self._project(project, paths)
        self.placement = Placement(self.files, self.problems)
        self.hosts = self.placement.hosts
        self._declare()
        pools = self._pools()
        networks = self._networks()
        self.networks = networks
        self._images()  # before domains: a disk in any file may name an image as its backing
        domains = self._domains()
        expected = self._resolve_references()
        return Desired(project=project, domains=tuple(domains), pools=tuple(pools), networks=tuple(networks),
                       files=tuple(f.path for f in self.files), expected_on_host=tuple(expected),
                       images=tuple(i for by_name in self.images_on.values() for i in by_name.values()),
                       roots=tuple(os.path.abspath(p) for p in paths), hosts=tuple(self.hosts.values()),
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
                for i, item in enumerate(list_of(f.data.get(kind))):
                    if isinstance(item, dict) and isinstance(item.get("name"), str):
                        names.setdefault(item["name"], "{}:{}:{}".format(f.path, *f.mark((kind, i))))

    def _declared(self, kind: str, noun: str
                  ) -> Iterator[tuple[SpecFile, Path_, Origin, str, dict[str, Any], str | None]]:
        """Each named item of a top-level list, once per name and host, skipping what the
        schema rejected, with the host it is placed on (its own `host`, else its file's or
        directory's defaults).

        A second item of the same name on the same host is reported here (where both are),
        so no caller has to; an item with its own schema problems still counts as taken.
        """
        names: dict[tuple[str | None, str], str] = {}
        for f in self.files:
            for i, item in enumerate(list_of(f.data.get(kind))):
                base = (kind, i)
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    continue
                where = Origin(f.path, *f.mark(base))
                name = item["name"]
                host = self.placement.host_of(f, base, item)
                if (host, name) in names:
                    on = f" on host {host!r}" if host else ""
                    self.problems.append(f.diag(base + ("name",), f"{noun} {name!r} is declared twice{on} (also at "
                                                                  f"{names[(host, name)]}); expected unique {noun} "
                                                                  "names" + (" per host" if self.hosts else "")))
                    continue
                names[(host, name)] = str(where)
                if not f.is_bad(base) and host != UNKNOWN:
                    yield f, base, where, name, item, host

    def _pools(self) -> list[PoolSpec]:
        pools: list[PoolSpec] = []
        seen_path: dict[tuple[str | None, str], str] = {}
        for f, base, where, name, item, host in self._declared("pools", "pool"):
            path = os.path.normpath(item["path"])
            if (host, path) in seen_path:
                self.problems.append(f.diag(base + ("path",), f"pool path {path} is already the path of pool "
                                                              f"{seen_path[(host, path)]}; expected one pool per "
                                                              "directory"))
                continue
            seen_path[(host, path)] = repr(name)
            pools.append(PoolSpec(name=name, path=path, origin=where, host=host))
        return pools

    def _networks(self) -> list[NetworkSpec]:
        networks: list[NetworkSpec] = []
        for f, base, where, name, item, host in self._declared("networks", "network"):
            if "dhcp" in item and "ip" not in item:
                self.problems.append(f.diag(base + ("dhcp",), "a DHCP range needs the network's own address; "
                                                              "expected 'ip' too"))
                continue
            dhcp = item.get("dhcp") or {}
            net = NetworkSpec(name=name, origin=where, mode=item.get("mode", "isolated"), bridge=item.get("bridge"),
                              ip=item.get("ip"), netmask=item.get("netmask"), dhcp_start=dhcp.get("start"),
                              dhcp_end=dhcp.get("end"), host=host)
            clash = self._network_clash(net, [n for n in networks if n.host == host])
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
        for f, base, where, name, item, host in self._declared("images", "image"):
            pool = item.get("pool", "default")
            self.seen.references.append(("pools", pool, Origin(f.path, *f.mark(base + ("pool",)))))
            source = item["source"]
            if "://" not in source:
                # Not checked here: once imported, an image no longer needs its source.
                source = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(f.path)), source))
            self.images_on.setdefault(host, {})[name] = ImageSpec(
                name=name, pool=pool, source=source, origin=where, format=item.get("format", "qcow2"),
                sha256=item.get("sha256", "").lower() or None, refresh=item.get("refresh", False), host=host)
            self.image_volumes[(pool, name)] = f"image {name!r}"

    def _domains(self) -> list[DomainSpec]:
        profiles = self._profiles()
        dir_defaults = [(os.path.dirname(os.path.abspath(f.path)), f) for f in self.files
                        if os.path.basename(f.path) in DIRECTORY_DEFAULTS and isinstance(f.data.get("defaults"), dict)]
        domains: list[DomainSpec] = []
        self.seen.volumes.update(self.image_volumes)
        for f in self.files:
            layers: list[Layer] = []
            here = os.path.abspath(f.path)
            for directory, d in sorted(dir_defaults, key=lambda x: len(x[0])):
                if here.startswith(directory + os.sep) and d is not f:
                    layers.append(self._settings_layer(d, ("defaults",), "defaults"))
            if isinstance(f.data.get("defaults"), dict):
                layers.append(self._settings_layer(f, ("defaults",), "defaults"))
            shared_bad = any(layer.file.is_bad(layer.base) for layer in layers)
            for i, item in enumerate(list_of(f.data.get("domains"))):
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
                        close = closest(chosen, profiles)
                        hint = f"did you mean {close!r}? " if close else ""
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
                    if name in self.seen.domains:
                        self.problems.append(copy.diag(("name",), f"domain {name!r} is declared twice (also at "
                                                                  f"{self.seen.domains[name]}); expected unique names"))
                        continue
                    self.seen.domains[name] = str(copy.origin)
                    if bad:
                        continue
                    host = None
                    if "host" in copy.data:
                        f_host, path_host = copy.where(("host",))
                        host = self.placement.known_host(copy.data["host"], f_host, path_host, resource=name)
                        if host == UNKNOWN:
                            continue
                    images = {**self.images_on.get(None, {}), **self.images_on.get(host, {})}
                    nets = {n.name: n for n in self.networks if n.host is None}
                    nets.update({n.name: n for n in self.networks if n.host == host and host is not None})
                    domain = DomainReader(copy, self.project, images, self.seen, self.problems, nets,
                                          host=host, resolve_secrets=self.resolve_secrets).read()
                    if domain is not None:
                        domains.append(domain)
                if item.get("count", 1) != 1:
                    self.problems[before:] = _fold_copies(self.problems[before:], item.get("name"))
        return domains

    def _settings_layer(self, f: SpecFile, base: Path_, what: str,
                        forbidden: tuple[str, ...] = ("name", "count", "hostname")
                        ) -> Layer:
        cached = self.layers.get((f.path, base))
        if cached is not None:  # directory defaults serve many files; report their problems once
            return cached
        data = at(f.data, base)
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
                profiles[name] = self._settings_layer(f, base, "a profile", ("name", "count", "hostname", "profile"))
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

    def _resolve_references(self) -> list[Reference]:
        """References to resources not declared in the specs: those must exist on the host."""
        expected: dict[tuple[str, str], Reference] = {}
        for kind, name, origin in self.seen.references:
            declared = self.declared.get(kind, {})
            if name in declared or (kind, name) in expected:
                continue
            close = closest(name, declared)
            hint = f"did you mean {close!r}, declared at {declared[close]}?" if close else ""
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
