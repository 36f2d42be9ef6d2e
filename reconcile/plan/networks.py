"""Planning networks. Pure: no libvirt, no files, no clock."""

from __future__ import annotations

from ..codec import network as netxml
from ..model import Action, ActionKind, Change, ChangeClass, Desired, NetworkSpec, Note, NoteKind, Observed, ResourceKind
from ..model.steps import EnsureNetwork
from . import diff
from .context import Planned, Waits


def plan_networks(desired: Desired, observed: Observed) -> tuple[Planned, Waits]:
    """Networks are created, started and marked autostart when missing; never changed or removed."""
    actions: list[Action] = []
    notes: list[Note] = []
    made: dict[tuple[ResourceKind, str], str] = {}
    refused: set[tuple[ResourceKind, str]] = set()
    for net in desired.networks:
        have = observed.networks.get(net.name)
        payload = EnsureNetwork(net.name, netxml.network_xml(net, desired.project))
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
                       changes=tuple(changes), payload=payload)
            actions.append(a)
            made[(ResourceKind.NETWORK, net.name)] = a.id
        elif not differ:
            notes.append(Note(ResourceKind.NETWORK, net.name, "exists and is active"))
    return Planned(tuple(actions), tuple(notes)), Waits(made, frozenset(refused))


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
