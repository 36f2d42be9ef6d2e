"""One generic runner for the planner scenarios in tests/planner/cases/*.yaml.

A case gives the specs (as YAML text, with `files:` they refer to), the observed host (as
plain data; a domain can be `like: NAME` to start from what the spec of NAME wants, then
`set:` a few fields; a seed volume can be `like: NAME` too, or list its files) and the
expected plan: actions as `GLYPH resource name`, changes, reasons and dependencies per
action, and notes (matched by substring). A volume's `head:` is what its first bytes say
(format, virtual_size, backing, backing_format), as observe reads it; `attached:` maps
`pool/volume` to the domains (of any project) that have it as a disk; `networks:` lists the
host's networks (essence, owner project and its `owner_spec` file, DHCP `hosts`);
`network_users:` maps a network to the domains (of any project) with an interface on it,
besides the observed domains whose interfaces say so; `images:` the images' records
(`{pool, name, current, stamp, versions}`: `versions`, those reconcile imported, default the current one, as a record without them reads); a domain's `unmodeled:` lists its devices no spec field
describes (`{tag, xml}`). A pool may carry reconcile's record (`owner: {project,
spec_file, made_directory}`, `spec_file: SPECS` for the case's own file); an active pool
holds the observed volumes in it (or `holds:`, their names), an inactive one none known. `rebuild: {names, start, refresh}` plans a rebuild instead
of an apply, `refresh` mapping an image's name to what its source says now (a stamp, or the
error its check gave); an ownership may give `rebuilds` and an unfinished `reset`
(`{generation, start}`). Adding a scenario is adding a file.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from reconcile import plan as planner
from reconcile.codec import seed
from reconcile import spec as specs
from reconcile.model import ImageHead, ImageRecord, SourceStamp
from reconcile.model import (HostEntry, Observed, ObservedDomain, ObservedNetwork, ObservedPool, ObservedSeed,
                             ObservedVolume, Ownership, PoolOwner, UnmodeledDevice, VolumeRef)
from reconcile.cli.render import change_line, change_text, dumps, plan_json, plan_text
from reconcile.model.observed import ResetMark
from reconcile.model.units import parse_size

CASES = sorted((Path(__file__).parent / "planner" / "cases").glob("*.yaml"))


def head_from(volume: dict) -> ImageHead | None:
    """What a volume's first bytes say: `content_format: FORMAT`, or `head:` with the fields
    of an ImageHead (virtual_size as a size with a unit)."""
    if "head" in volume:
        head = dict(volume["head"])
        if head.get("virtual_size") is not None:
            head["virtual_size"] = parse_size(head["virtual_size"])
        return ImageHead(**head)
    return ImageHead(volume["content_format"]) if "content_format" in volume else None


def observed_from(data: dict, desired) -> Observed:
    wanted = {d.name: d for d in desired.domains}
    domains = {}
    for d in data.get("domains", []):
        essence = {}
        if "like" in d:
            spec = wanted[d["like"]]
            essence = copy.deepcopy(spec.essence())
        for key, value in (d.get("set") or {}).items():
            essence[key] = value
        essence.update(copy.deepcopy(d.get("essence") or {}))
        owner = d.get("ownership", {"project": desired.project})
        # `spec_file: SPECS` is the case's own spec file, as a domain made from it records it.
        ownership = None if owner is None else Ownership(
            project=owner["project"],
            spec_file=desired.absolute_files[0] if owner.get("spec_file") == "SPECS" else owner.get("spec_file", ""),
            volumes=tuple(VolumeRef(v["pool"], v["name"], v.get("keep", False)) for v in owner.get("volumes", [])),
            stop_timeout=owner.get("stop_timeout"), rebuilds=owner.get("rebuilds", 0),
            reset=ResetMark(**owner["reset"]) if owner.get("reset") else None)
        if ownership is not None and "applied" in (owner or {}):
            applied = copy.deepcopy(wanted[d["like"]].essence()) if owner["applied"] == "like" else owner["applied"]
            ownership = dataclasses.replace(ownership, applied=applied)
        live = None
        if d.get("running", True):
            live = copy.deepcopy(essence)
            for key, value in (d.get("live") or {}).items():
                live[key] = value
        domains[d["name"]] = ObservedDomain(name=d["name"], uuid=d.get("uuid", "00000000-0000-0000-0000-000000000001"),
                                            running=d.get("running", True), essence=essence, ownership=ownership,
                                            live_essence=live,
                                            unmodeled=tuple(UnmodeledDevice(**u) for u in d.get("unmodeled", [])))
    volumes = {(v["pool"], v["name"]): ObservedVolume(v["pool"], v["name"], parse_size(v["capacity"]), 0,
                                                      v.get("format", "qcow2"), v.get("path", f"/x/{v['name']}"),
                                                      v.get("backing"), head_from(v))
               for v in data.get("volumes", [])}
    # A seed is given as the files it holds; `like: DOMAIN` holds exactly what that spec wants.
    seeds = {}
    for s in data.get("seeds", []):
        if "like" in s:
            files = dict(wanted[s["like"]].seed.files)
        else:
            files = None if s.get("files") is None else {k: v.encode() for k, v in s["files"].items()}
        seeds[(s["pool"], s["name"])] = ObservedSeed(files, seed.instance_id_of(files.get("meta-data", b"")) if files else None)
        volumes.setdefault((s["pool"], s["name"]), ObservedVolume(s["pool"], s["name"], 65536, 0, "raw", f"/x/{s['name']}"))
    pools = {p["name"]: pool_from(p, volumes, desired) for p in data.get("pools", [])}
    aliases = {tuple(k.split("/")): v for k, v in (data.get("machine_aliases") or {}).items()}
    attached = {tuple(k.split("/")): tuple(v) for k, v in (data.get("attached") or {}).items()}
    networks = {n["name"]: ObservedNetwork(n["name"], n.get("active", True), n.get("autostart", True),
                                           n.get("essence", {"mode": "isolated"}), n.get("owner"),
                                           tuple(sorted(HostEntry(**h) for h in n.get("hosts", []))),
                                           spec_path(n.get("owner_spec", ""), desired))
                for n in data.get("networks", [])}
    on_network: dict[str, set[str]] = {k: set(v) for k, v in (data.get("network_users") or {}).items()}
    for dom in domains.values():
        for iface in dom.essence.get("interfaces") or ():
            on_network.setdefault(iface["network"], set()).add(dom.name)
    images = {(i["pool"], i["name"]): ImageRecord(i["current"], SourceStamp(**i["stamp"]), tuple(i.get("versions", (i["current"],))))
              for i in data.get("images", [])}
    return Observed(uri="test:///plain", domains=domains, pools=pools, volumes=volumes, seeds=seeds,
                    machine_aliases=aliases, attached=attached, networks=networks, images=images,
                    network_users={k: tuple(sorted(v)) for k, v in on_network.items()})


def spec_path(value: str, desired) -> str:
    """`SPECS` is the case's own spec file, as what reconcile made from it records it."""
    return desired.absolute_files[0] if value == "SPECS" else value


def pool_from(p: dict, volumes: dict, desired) -> ObservedPool:
    owner = p.get("owner")
    record = None if owner is None else PoolOwner(owner["project"], spec_path(owner.get("spec_file", ""), desired),
                                                  owner.get("made_directory", False))
    active = p.get("active", True)
    holds = tuple(sorted(p.get("holds") or [name for pool, name in volumes if pool == p["name"]])) if active else None
    return ObservedPool(p["name"], active, p.get("path", "/x"), record, holds)


@pytest.mark.parametrize("case_file", CASES, ids=[c.stem for c in CASES])
def test_planner_case(case_file: Path, tmp_path: Path) -> None:
    case = yaml.safe_load(case_file.read_text())
    spec_file = tmp_path / "specs.yaml"
    spec_file.write_text(case["specs"])
    for name, text in (case.get("files") or {}).items():  # files the specs refer to
        (tmp_path / name).write_text(text)
    desired = specs.load([str(spec_file)])
    observed = observed_from(case.get("observed") or {}, desired)
    options = planner.Options(prune=case.get("prune", False), **(case.get("options") or {}))
    def make():
        if case.get("destroy"):
            return planner.plan_destroy(desired, observed)
        if "rebuild" in case:  # `rebuild: {names: [...], start: bool}`
            refresh = {name: stamp if isinstance(stamp, str) else SourceStamp(**stamp)
                       for name, stamp in (case["rebuild"].get("refresh") or {}).items()}
            return planner.plan_rebuild(desired, observed, tuple(case["rebuild"].get("names", ())),
                                        start=case["rebuild"].get("start", False), refresh=refresh)
        return planner.plan(desired, observed, options=options)

    plan = make()

    expect = case["expect"]
    got = [f"{a.kind.glyph} {a.resource.value} {a.name}" for a in plan.actions]
    assert got == expect.get("actions", []), f"actions of {case_file.name}"

    for label, lines in (expect.get("changes") or {}).items():
        action = next(a for a in plan.actions if f"{a.kind.glyph} {a.resource.value} {a.name}" == label)
        assert [change_line(c) for c in action.changes] == lines, f"changes of {label}"
    for label, lines in (expect.get("changes_with_class") or {}).items():
        action = next(a for a in plan.actions if f"{a.kind.glyph} {a.resource.value} {a.name}" == label)
        assert [change_text(c) for c in action.changes] == lines, f"changes of {label}"
    got_pending = {p.name: [change_text(c) for c in p.changes] for p in plan.pending}
    assert got_pending == (expect.get("pending") or {}), "pending"

    notes = [f"{'!' if n.refused else '='} {n.resource.value} {n.name}: {n.message}" for n in plan.notes]
    for wanted in expect.get("notes", []):
        assert any(wanted in n for n in notes), f"no note contains {wanted!r}; notes: {notes}"
    shown = plan_text(plan, verbose=True) + dumps(plan_json(plan))
    for secret in expect.get("hidden", []):
        assert secret not in shown, f"{secret!r} is shown in the plan"
    for label, reason in (expect.get("reasons") or {}).items():
        action = next(a for a in plan.actions if f"{a.kind.glyph} {a.resource.value} {a.name}" == label)
        assert reason in action.reason, f"reason of {label}: {action.reason!r}"
    for label, timeout in (expect.get("stop_timeouts") or {}).items():
        action = next(a for a in plan.actions if f"{a.kind.glyph} {a.resource.value} {a.name}" == label)
        assert action.payload.stop_timeout == timeout, f"stop_timeout of {label}"
    for label, deps in (expect.get("depends") or {}).items():
        action = next(a for a in plan.actions if f"{a.kind.glyph} {a.resource.value} {a.name}" == label)
        assert set(deps) <= set(action.depends_on), f"{label} depends on {action.depends_on}"
    assert len(plan.refusals) == expect.get("refusals", 0), notes

    # The planner is a pure function: the same inputs give the same plan.
    assert make() == plan
