"""The record a domain carries (its ownership) and the definition that writes it. Pure."""

from __future__ import annotations

import dataclasses

from ..codec import domain as domxml
from ..codec import ownership
from ..model import DomainSpec, Ownership, State, VolumeRef
from ..model.steps import DefineDomain, LiveChange
from .context import Context


def owner_of(spec: DomainSpec, ctx: Context, want: dict, previously_owned: set[tuple[str, str]],
             rebuilds: int = 0) -> Ownership:
    """The ownership record the domain will carry: the volumes reconcile made for it (and
    makes now), and the essence applied."""
    owned = [VolumeRef(d.pool, d.volume, d.keep) for d in spec.disks
             if (d.pool, d.volume) in previously_owned or (d.pool, d.volume) not in ctx.observed.volumes]
    if spec.seed:  # derived data: always reconcile's own, rebuilt at will
        owned.append(VolumeRef(spec.seed.pool, spec.seed.volume, False))
    return Ownership(project=ctx.desired.project, spec_file=ctx.desired.absolute(spec.origin.file),
                     spec_hash=ownership.spec_hash(spec), volumes=tuple(owned), applied=dict(want, state=spec.state.value),
                     stop_timeout=spec.stop_timeout, rebuilds=rebuilds)


def define_payload(spec: DomainSpec, owner: Ownership, uuid: str | None, current: str | None, ctx: Context,
                   live: tuple[LiveChange, ...], state: State) -> DefineDomain:
    """What defining the domain takes. The state recorded as applied is the one the domain
    has once defined; the start or stop that follows records its own when it succeeds, so a
    start that never happened (a run cut short) is not later taken for drift."""
    owner = dataclasses.replace(owner, applied=dict(owner.applied or {}, state=state.value))
    xml = domxml.domain_xml(spec, owner, uuid, current=current or None, volume_by_path=ctx.by_path)
    return DefineDomain(xml, spec.autostart, live)
