"""Planning networks. Pure: no libvirt, no files, no clock."""

from __future__ import annotations

from ..codec import network as netxml
from ..model import (Action, ActionKind, Change, ChangeClass, Desired, HostEntry, NetworkSpec, Note, NoteKind, Observed,
                     ObservedNetwork, ResourceKind, State)
from ..model.steps import EnsureNetwork, UpdateNetworkHosts
from . import diff
from .context import Planned, Waits


def plan_networks(desired: Desired, observed: Observed) -> tuple[Planned, Waits]:
    """Networks are created, started and marked autostart when missing; never changed (their
    removal is `teardown`'s)."""
    actions: list[Action] = []
    notes: list[Note] = []
    made: dict[tuple[ResourceKind, str], str] = {}
    refused: set[tuple[ResourceKind, str]] = set()
    wanted = reservations(desired, observed)
    declared = {n.name for n in desired.networks}
    for name in sorted(set(wanted) - declared):
        notes.append(Note(ResourceKind.NETWORK, name, f"no reservation made for {_listed(wanted[name])}: the specs do "
                          "not declare this network, and reconcile never changes one it did not create",
                          NoteKind.WARNING))
    for net in desired.networks:
        have = observed.networks.get(net.name)
        payload = EnsureNetwork(net.name, netxml.network_xml(net, desired.project, wanted.get(net.name, ()),
                                                             desired.absolute(net.origin.file)))
        clash = network_clash(net, observed) if have is None else ""
        if clash:
            notes.append(Note(ResourceKind.NETWORK, net.name, f"{clash}; libvirt would refuse to start it, so it is "
                              "not created (give it another address or bridge)", kind=NoteKind.REFUSED))
            refused.add((ResourceKind.NETWORK, net.name))
            continue
        if have is None:
            changes = tuple(Change((k,), None, v) for k, v in sorted(net.essence().items()))
            a = Action(ActionKind.CREATE, ResourceKind.NETWORK, net.name, f"not on the host; {net.mode} network",
                       changes=changes, payload=payload)
            actions.append(a)
            made[(ResourceKind.NETWORK, net.name)] = a.id
            continue
        update = _reservations(net, have, wanted.get(net.name, ()), desired.project)
        if isinstance(update, Note):
            notes.append(update)
        elif update is not None:
            actions.append(update)
            made[(ResourceKind.NETWORK, net.name)] = update.id
        differ = diff.changes(net.essence(), have.essence)
        if differ:
            what = ", ".join(f"{c.shown} {c.before} -> {c.after}" for c in differ)
            notes.append(Note(ResourceKind.NETWORK, net.name,
                              f"exists but differs ({what}); a network is never changed once it exists, since "
                              "every guest on it would lose its link; used as it is", NoteKind.DIFFERS))
        if not have.active or not have.autostart:
            changes = []
            if not have.active:
                changes.append(Change(("active",), False, True, ChangeClass.LIVE))
            if not have.autostart:
                changes.append(Change(("autostart",), False, True, ChangeClass.LIVE))
            a = Action(ActionKind.START, ResourceKind.NETWORK, net.name,
                       "defined but " + " and ".join(("not active",) * (not have.active) + ("not autostarted",) * (not have.autostart)),
                       changes=tuple(changes), payload=payload,
                       depends_on=(update.id,) if isinstance(update, Action) else ())
            actions.append(a)
            made[(ResourceKind.NETWORK, net.name)] = a.id
        elif not differ and not isinstance(update, Action):
            notes.append(Note(ResourceKind.NETWORK, net.name, "exists and is active"))
    return Planned(tuple(actions), tuple(notes)), Waits(made, frozenset(refused))


def reservations(desired: Desired, observed: Observed) -> dict[str, tuple[HostEntry, ...]]:
    """The DHCP reservations each network should hold: for every interface with a reserved
    ip, its MAC (given; the one the domain has at that position; else the one it will be
    created with) and the domain's hostname."""
    out: dict[str, list[HostEntry]] = {}
    for spec in desired.domains:
        if spec.state is State.ABSENT:
            continue
        have = observed.domains.get(spec.name)
        live = (have.essence.get("interfaces") or []) if have is not None else []
        for j, iface in enumerate(spec.interfaces or ()):
            if iface.ip is None:
                continue
            existing = live[j].get("mac") if j < len(live) and isinstance(live[j], dict) else None
            mac = iface.mac or existing or iface.derived_mac
            if mac:
                out.setdefault(iface.network, []).append(HostEntry(iface.ip, mac.lower(), spec.hostname))
    return {name: tuple(sorted(hosts)) for name, hosts in out.items()}


def _reservations(net: NetworkSpec, have: ObservedNetwork, wanted: tuple[HostEntry, ...],
                  project: str) -> Action | Note | None:
    """The live update that makes an existing network hold exactly `wanted`, or why not."""
    if set(have.hosts) == set(wanted):
        return None
    if have.owner_project != project:
        if not wanted:
            return None  # its own reservations: not ours to remove
        return Note(ResourceKind.NETWORK, net.name, f"no reservation made for {_listed(wanted)}: the network was not "
                    f"created by this project ({have.owner_project or 'not by reconcile'}), and reconcile never "
                    "changes it", NoteKind.WARNING)
    add = tuple(h for h in wanted if h not in have.hosts)
    remove = tuple(h for h in have.hosts if h not in wanted)
    changes = [Change(("hosts", h.ip), _entry(h), None, ChangeClass.LIVE) for h in remove]
    changes += [Change(("hosts", h.ip), None, _entry(h), ChangeClass.LIVE) for h in add]
    return Action(ActionKind.UPDATE, ResourceKind.NETWORK, net.name,
                  f"reservations: {len(add)} to add, {len(remove)} to remove; live, no guest loses its link",
                  changes=tuple(sorted(changes, key=lambda c: (c.shown, c.before is None))),
                  payload=UpdateNetworkHosts(net.name, add, remove))


def _entry(host: HostEntry) -> str:
    return host.mac + (f" {host.name}" if host.name else "")


def _listed(hosts: tuple[HostEntry, ...]) -> str:
    return ", ".join(f"{h.ip} ({_entry(h)})" for h in hosts)


def network_clash(net: NetworkSpec, observed: Observed) -> str:
    """Why a network to create cannot work beside those on the host: its bridge or its subnet
    is taken. Empty when it can."""
    mine = netxml.subnet(net.ip, net.netmask)
    for other in sorted(observed.networks.values(), key=lambda n: n.name):
        have = other.essence
        if net.bridge and have.get("bridge") == net.bridge:
            return f"its bridge {net.bridge} is already the bridge of network {other.name} on the host"
        theirs = netxml.subnet(have.get("ip"), have.get("netmask"))
        if mine is not None and theirs is not None and mine.overlaps(theirs):
            return f"its subnet {mine} overlaps {theirs} of network {other.name} on the host"
    return ""
