"""A running lab as the next tool needs it: readiness conditions, what a host says about a
guest (its addresses, consoles, agent), and whether each condition holds.

A spec's `ready:` is a `Ready`; `Guest` is read from the host at one moment; `Readiness`
is the verdict on one domain, with the last thing seen for each condition, so a timeout can
say what was missing. Immutable data, no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


def one_line(text: str) -> str:
    """Text from a guest or a host (a console line, an error) made safe to print on one line
    of a terminal, a YAML comment or an ssh config: control characters become `?`."""
    return "".join(ch if ch.isprintable() else "?" for ch in text.strip())


class ConditionKind(str, enum.Enum):
    RUNNING = "running"  # the domain runs; every wait starts with it
    ADDRESS = "address"
    TCP = "tcp"
    CONSOLE = "console"
    AGENT = "agent"


@dataclass(frozen=True)
class Condition:
    kind: ConditionKind
    port: int | None = None  # tcp
    pattern: str | None = None  # console: a regular expression, compiled by the spec reader

    def __str__(self) -> str:
        if self.kind is ConditionKind.TCP:
            return f"tcp {self.port}"
        if self.kind is ConditionKind.CONSOLE:
            return f"console /{self.pattern}/"
        return self.kind.value


@dataclass(frozen=True)
class Ready:
    """The conditions a spec gives under `ready:`; a `tcp` port implies an address."""

    address: bool = False
    tcp: tuple[int, ...] = ()
    console: str | None = None
    agent: bool = False

    def conditions(self) -> tuple[Condition, ...]:
        out = [Condition(ConditionKind.RUNNING)]
        if self.address or self.tcp:
            out.append(Condition(ConditionKind.ADDRESS))
        out += [Condition(ConditionKind.TCP, port=p) for p in self.tcp]
        if self.console is not None:
            out.append(Condition(ConditionKind.CONSOLE, pattern=self.console))
        if self.agent:
            out.append(Condition(ConditionKind.AGENT))
        return tuple(out)


class AddressSource(str, enum.Enum):
    LEASE = "lease"  # the libvirt network's DHCP server handed it out
    AGENT = "agent"  # the guest agent reports it from inside the guest
    ARP = "arp"  # the host's neighbour table has seen it
    RESERVED = "reserved"  # reserved in the spec; no lease seen yet (inventory only)


@dataclass(frozen=True)
class Address:
    ip: str
    source: AddressSource
    mac: str
    prefix: int | None = None
    expires: int | None = None  # a lease's expiry (seconds since the epoch)

    def __str__(self) -> str:
        return f"{self.ip} ({self.source.value})"


@dataclass(frozen=True)
class Nic:
    mac: str
    network: str | None  # None: not on a libvirt network (a bridge, direct, user)
    model: str | None = None


@dataclass(frozen=True)
class Guest:
    """What the host says about one domain at one moment."""

    name: str
    state: str  # running, paused, shut off, ... or "absent"
    nics: tuple[Nic, ...] = ()
    addresses: tuple[Address, ...] = ()  # IPv4, in the order of the domain's interfaces
    address_note: str = ""  # why there is none, when there is none
    vnc: str | None = None  # host:port of its VNC display
    console_pty: str | None = None
    console_log: str | None = None
    agent_channel: bool = False
    uuid: str | None = None
    on_dhcp: bool | None = False  # an interface is on a network that hands out addresses; None: unknown

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def address(self) -> Address | None:
        """The address tools reach the domain at: the first one of its first interface that has one."""
        return self.addresses[0] if self.addresses else None


@dataclass(frozen=True)
class Check:
    """One condition of one domain: whether it held, and the last thing seen about it."""

    condition: Condition
    met: bool
    seen: str = ""
    at: float | None = None  # seconds after the wait began when it first held
    final: bool = False  # it cannot hold without a change to the domain: the wait ends now


@dataclass(frozen=True)
class Readiness:
    domain: str
    checks: tuple[Check, ...]
    waited: float = 0.0  # seconds the wait for this domain took
    skipped: str = ""  # why it was not waited for (e.g. its spec says stopped)

    @property
    def ready(self) -> bool:
        return not self.skipped and all(c.met for c in self.checks)

    @property
    def failed(self) -> Check | None:
        """The first condition that did not hold."""
        return next((c for c in self.checks if not c.met), None)
