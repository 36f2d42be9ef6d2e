"""What a run has seen so far, across all its files: one registry, so that the checks that
span domains (a name declared twice, a volume or a MAC used twice, references to resolve)
read and write one place instead of arguments passed along."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import Origin


@dataclass
class Seen:
    domains: dict[str, str] = field(default_factory=dict)  # name -> where it was declared
    volumes: dict[tuple[str, str], str] = field(default_factory=dict)  # (pool, volume) -> what uses it
    macs: dict[str, str] = field(default_factory=dict)  # MAC -> the domain that has it
    addresses: dict[str, str] = field(default_factory=dict)  # a reserved ip -> the domain that has it
    hostnames: dict[str, str] = field(default_factory=dict)  # a hostname -> the domain that has it
    references: list[tuple[str, str, Origin]] = field(default_factory=list)  # (kind, name, where used)
