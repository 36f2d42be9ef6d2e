"""The lab handed to the next tool: an Ansible inventory (YAML, or the JSON of Ansible's
dynamic inventory protocol) and ssh_config `Host` blocks. Pure: built from the specs and
what the host said about each guest.

Every domain is a host, named as the domain. Its address is the one the host reports
(a lease, the agent, ARP), else the one its spec reserves; a domain with neither is still
listed, without an address, and named in `missing` so the command can say so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..model import Address, AddressSource, DomainSpec, Guest, one_line


@dataclass(frozen=True)
class Host:
    name: str
    address: Address | None
    why: str  # why there is no address, when there is none
    spec: DomainSpec

    @property
    def known(self) -> bool:
        """Whether the next tool has an address for it (its spec's vars may give one)."""
        return self.address is not None or "ansible_host" in self.spec.vars


RESERVED_GROUPS = ("all", "ungrouped", "_meta")  # Ansible's own, and the key of hostvars in --list


def project_group(project: str) -> str:
    """The project's group: its name with what Ansible does not allow in a group name as _,
    and `project_` before a name Ansible keeps for itself."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", project)
    name = name if re.match(r"[A-Za-z_]", name) else f"_{name}"
    return f"project_{name}" if name in RESERVED_GROUPS else name


def hosts_of(specs: Iterable[DomainSpec], guests: Mapping[str, Guest]) -> list[Host]:
    out = []
    for spec in specs:
        guest = guests.get(spec.name) or Guest(spec.name, "absent")
        address, why = guest.address, ""
        if address is None:
            reserved = next((i for i in spec.interfaces or () if i.ip), None)
            if reserved is not None:
                address = Address(reserved.ip, AddressSource.RESERVED, reserved.mac or reserved.derived_mac or "")
            elif guest.state == "absent":
                why = "the domain does not exist (run reconcile apply)"
            elif not guest.running:
                why = f"the domain is {guest.state}"
            else:
                why = guest.address_note or "no address known"
        out.append(Host(spec.name, address, one_line(why), spec))
    return out


def host_vars(host: Host) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if host.address is not None:
        out["ansible_host"] = host.address.ip
    if host.spec.ssh_user:
        out["ansible_user"] = host.spec.ssh_user
    if host.spec.ssh_port:
        out["ansible_port"] = host.spec.ssh_port
    out.update(host.spec.vars)  # the spec's own vars win
    return out


def groups_of(project: str, hosts: list[Host]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {project_group(project): [h.name for h in hosts]}
    for h in hosts:
        for g in h.spec.groups:
            members = groups.setdefault(g, [])
            if h.name not in members:
                members.append(h.name)
    return groups


def inventory_yaml_data(project: str, hosts: list[Host]) -> dict[str, Any]:
    """The YAML inventory: every host with its vars under `all`, each group listing its hosts."""
    children = {g: {"hosts": {name: None for name in members}} for g, members in groups_of(project, hosts).items()}
    return {"all": {"hosts": {h.name: host_vars(h) or None for h in hosts}, "children": children}}


def inventory_list(project: str, hosts: list[Host]) -> dict[str, Any]:
    """`--list` of Ansible's dynamic inventory protocol; `_meta.hostvars` holds every
    host's variables, so Ansible never needs to call the script with `--host`."""
    groups = groups_of(project, hosts)
    out: dict[str, Any] = {"_meta": {"hostvars": {h.name: host_vars(h) for h in hosts}},
                           "all": {"children": sorted(groups) + ["ungrouped"]}}
    for g, members in groups.items():
        out[g] = {"hosts": members}
    out["ungrouped"] = {"hosts": []}
    return out


_SSH_VALUE = re.compile(r"[A-Za-z0-9_.:@%-]{1,255}")


def ssh_config(hosts: list[Host], header: str) -> str:
    """`Host` blocks for `ssh -F FILE NAME`; a domain without an address is a comment."""
    lines = [f"# {one_line(header)}"]
    for h in hosts:
        lines.append("")
        if not h.known:
            lines.append(f"# Host {h.name}: no address yet: {h.why}")
            continue
        # What the inventory gives Ansible, so ssh and Ansible reach the same place; a
        # value from vars is written only when it cannot break the line.
        hv = host_vars(h)
        lines.append(f"Host {h.name}")
        for key, value in (("HostName", hv.get("ansible_host")), ("User", hv.get("ansible_user")),
                           ("Port", hv.get("ansible_port"))):
            if value is not None and _SSH_VALUE.fullmatch(str(value)):
                lines.append(f"  {key} {value}")
    return "\n".join(lines) + "\n"
