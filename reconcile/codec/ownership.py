"""reconcile's ownership record in a domain's metadata, both ways. Pure.

Every domain reconcile defines carries `<reconcile:owner>` in its own namespace: the project,
the spec file, a hash of the spec, the volumes reconcile created for it, its stop timeout,
and the essence (with the state) it applied last, which is how drift is told apart from a
spec change.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET

from ..model import DomainSpec, Ownership, VolumeRef
from ..model.observed import ResetMark

NAMESPACE = "http://reconcile.dev/xmlns/domain/1"
PREFIX = "reconcile"
ET.register_namespace(PREFIX, NAMESPACE)

_Q = "{%s}" % NAMESPACE


def spec_hash(spec: DomainSpec) -> str:
    """A stable digest of everything the spec asks of a domain, recorded in its metadata."""
    doc = {
        "essence": spec.essence(),
        "sizes": {d.target: d.size for d in spec.disks},
        "keep": {d.target: d.keep for d in spec.disks},
        "backing": {d.target: str(d.backing) for d in spec.disks if d.backing},
        "seed": spec.seed.digest if spec.seed else None,
    }
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ownership_element(owner: Ownership, seed_instance_id: str | None = None) -> ET.Element:
    el = ET.Element(_Q + "owner", {
        "project": owner.project,
        "spec": owner.spec_file,
        "hash": owner.spec_hash,
    })
    if owner.stop_timeout is not None:
        el.set("stop-timeout", format(owner.stop_timeout, "g"))
    if owner.rebuilds:
        el.set("rebuilds", str(owner.rebuilds))
    if owner.reset is not None:
        ET.SubElement(el, _Q + "reset", {"generation": str(owner.reset.generation),
                                         "start": "yes" if owner.reset.start else "no"})
    if seed_instance_id is not None:
        ET.SubElement(el, _Q + "seed", {"instance-id": seed_instance_id})
    for vol in owner.volumes:
        ET.SubElement(el, _Q + "volume", {"pool": vol.pool, "name": vol.name, "keep": "yes" if vol.keep else "no"})
    if owner.applied is not None:
        ET.SubElement(el, _Q + "applied").text = json.dumps(owner.applied, sort_keys=True, separators=(",", ":"))
    return el


def read_ownership(root: ET.Element) -> Ownership | None:
    el = _owner_element(root)
    if el is None:
        return None
    volumes = tuple(
        VolumeRef(pool=v.get("pool", ""), name=v.get("name", ""), keep=v.get("keep") == "yes")
        for v in el.findall(_Q + "volume")
    )
    applied = None
    text = el.findtext(_Q + "applied")
    if text:
        try:
            applied = json.loads(text)
        except ValueError:
            applied = None  # edited by hand into nonsense: no drift can be told apart, nothing else breaks
    try:
        stop_timeout = float(el.get("stop-timeout", "")) if el.get("stop-timeout") else None
    except ValueError:
        stop_timeout = None  # edited by hand: the default applies
    if stop_timeout is not None and not 0 <= stop_timeout < float("inf"):
        stop_timeout = None
    return Ownership(
        project=el.get("project", ""),
        stop_timeout=stop_timeout,
        spec_file=el.get("spec", ""),
        spec_hash=el.get("hash", ""),
        volumes=volumes,
        applied=applied if isinstance(applied, dict) else None,
        rebuilds=_count(el.get("rebuilds")),
        reset=_reset_mark(el.find(_Q + "reset")),
    )


def owner_xml(owner: Ownership, seed_instance_id: str | None = None) -> str:
    """The record as text for libvirt's metadata call, which takes the namespace apart and
    the element without it (as it hands the element back)."""
    el = ownership_element(owner, seed_instance_id)
    for node in el.iter():
        node.tag = node.tag.removeprefix(_Q)
    return ET.tostring(el, encoding="unicode")


def _count(text: str | None) -> int:
    try:
        n = int(text or 0)
    except ValueError:
        return 0  # edited by hand: as if never rebuilt
    return n if 0 <= n < 10**9 else 0


def _reset_mark(el: ET.Element | None) -> ResetMark | None:
    if el is None:
        return None
    generation = _count(el.get("generation"))
    return ResetMark(generation, el.get("start") == "yes") if generation > 0 else None


def with_applied_state(owner_xml: str, state: str) -> str | None:
    """reconcile's metadata element (as libvirt returns it) with the applied state changed
    (and, for a start, a finished rebuild's mark removed); None when there is nothing to
    change or it records nothing applied (a domain of an older reconcile, or edited)."""
    el = ET.fromstring(owner_xml)
    # libvirt hands the element back without its namespace, and puts it back in on setting it
    applied = el.find("applied") if el.find("applied") is not None else el.find(_Q + "applied")
    if applied is None or not applied.text:
        return None
    try:
        record = json.loads(applied.text)
    except ValueError:
        return None
    # A start ends a rebuild: the mark a finished reset leaves until then goes with it.
    marks = [m for m in list(el) if m.tag in ("reset", _Q + "reset")] if state == "running" else []
    if not isinstance(record, dict) or (record.get("state") == state and not marks):
        return None
    for m in marks:
        el.remove(m)
    record["state"] = state
    applied.text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return ET.tostring(el, encoding="unicode")


def _owner_element(root: ET.Element) -> ET.Element | None:
    metadata = root.find("metadata")
    return metadata.find(_Q + "owner") if metadata is not None else None
