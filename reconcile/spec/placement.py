"""Where each resource of a run is: the `hosts:` every file may declare, and the host a
domain, pool, network or image is placed on (its own `host`, else its file's or its
directory's defaults), checked against them. Pure: no libvirt.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import Diagnostic
from ..model import HostSpec, Origin
from .formats import closest
from .layers import DIRECTORY_DEFAULTS
from .paths import at
from .source import Path_, SpecFile

UNKNOWN = "\x00unknown host"  # a host name no `hosts` declares (reported where it is given)


class Placement:
    """The run's hosts, and the host of each thing placed on one."""

    def __init__(self, files: list[SpecFile], problems: list[Diagnostic]):
        self.files, self.problems = files, problems
        self.hosts = self._declared_hosts()
        self.host_defaults = self._host_defaults()

    def _declared_hosts(self) -> dict[str, HostSpec]:
        """The hosts every file of the run may place resources on, by name."""
        hosts: dict[str, HostSpec] = {}
        by_uri: dict[str, HostSpec] = {}
        for f in self.files:
            items = f.data.get("hosts")
            if not isinstance(items, dict) or f.is_bad(("hosts",)):
                continue
            for name, uri in items.items():
                where = Origin(f.path, *f.mark(("hosts", name)))
                if name in hosts:
                    if hosts[name].uri != uri:
                        self.problems.append(f.diag(("hosts", name), f"host {name!r} is {uri}, but {hosts[name].origin} "
                                                                     f"says {hosts[name].uri}; expected one URI per host "
                                                                     "name across the files", resource=name))
                    continue
                if uri in by_uri:
                    self.problems.append(f.diag(("hosts", name), f"{uri} is already host {by_uri[uri].name!r} (at "
                                                                 f"{by_uri[uri].origin}); one daemon under two names "
                                                                 "would show its domains twice: expected one name per "
                                                                 "URI", resource=name))
                    continue
                hosts[name] = by_uri[uri] = HostSpec(name, uri, where)
        return hosts

    def _host_defaults(self) -> dict[str, tuple[SpecFile, Path_]]:
        """For each file, where the `host` of its defaults comes from: its own `defaults`,
        else the nearest `_defaults.yaml` above it, so a directory can place a whole subtree."""
        directories = sorted(((os.path.dirname(os.path.abspath(f.path)), f) for f in self.files
                              if os.path.basename(f.path) in DIRECTORY_DEFAULTS
                              and isinstance(f.data.get("defaults"), dict) and "host" in f.data["defaults"]),
                             key=lambda x: len(x[0]))
        out: dict[str, tuple[SpecFile, Path_]] = {}
        for f in self.files:
            defaults = f.data.get("defaults")
            if isinstance(defaults, dict) and "host" in defaults:
                out[f.path] = (f, ("defaults", "host"))
                continue
            here = os.path.abspath(f.path)
            for directory, d in directories:
                if here.startswith(directory + os.sep):
                    out[f.path] = (d, ("defaults", "host"))  # the longest match is last
        return out

    def host_of(self, f: SpecFile, base: Path_, item: dict[str, Any]) -> str | None:
        """The host a pool, network or image is placed on; `UNKNOWN` (reported) for a name
        no `hosts` declares."""
        if "host" in item:
            where, path, host = f, base + ("host",), item["host"]
        elif f.path in self.host_defaults:
            where, path = self.host_defaults[f.path]
            host = at(where.data, path)
        else:
            return None
        return self.known_host(host, where, path)

    def known_host(self, host: Any, f: SpecFile, path: Path_, resource: str | None = None) -> str | None:
        if not isinstance(host, str) or f.is_bad(path):
            return UNKNOWN
        if host in self.hosts:
            return host
        close = closest(host, self.hosts)
        hint = f"did you mean {close!r}? " if close else ""
        known = ", ".join(repr(h) for h in sorted(self.hosts)) or "none"
        diag = f.diag(path, f"there is no host {host!r}; {hint}expected a name declared under hosts "
                            f"(declared: {known})", resource=resource)
        if diag not in self.problems:  # a directory's defaults place many items: said once
            self.problems.append(diag)
        return UNKNOWN
