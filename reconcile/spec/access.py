"""What a domain tells the tools that come after apply: when it is ready (`ready:`), how
to reach it (`ssh:`), and how Ansible sees it (`groups:`, `vars:`). Read with the checks a
schema cannot make: a console pattern that compiles, a console log to read it from, an agent
condition on a domain that keeps its agent channel."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..model import Ready


@dataclass(frozen=True)
class Access:
    ready: Ready | None
    guest_agent: bool | None
    groups: tuple[str, ...]
    vars: dict[str, Any]
    ssh_user: str | None
    ssh_port: int | None


def read_access(data: dict[str, Any], problem) -> Access:
    """The fields of `data` (a merged domain) about readiness and hand-off; `problem(path,
    message)` records what is wrong."""
    ready = _ready(data, problem) if "ready" in data else None
    agent = data.get("guest_agent")
    if ready is not None and ready.agent:
        if agent is False:
            problem(("ready", "agent"), "the guest agent is asked for but guest_agent is false, which removes its "
                                        "channel; expected guest_agent: true, or no agent condition")
        agent = True
    ssh = data.get("ssh", {})
    return Access(ready=ready, guest_agent=agent, groups=tuple(data.get("groups", ())),
                  vars=dict(data.get("vars", {})), ssh_user=ssh.get("user"), ssh_port=ssh.get("port"))


def _ready(data: dict[str, Any], problem) -> Ready:
    r = data["ready"]
    tcp = r.get("tcp", ())
    tcp = (tcp,) if isinstance(tcp, int) else tuple(tcp)
    console = r.get("console")
    if console is not None:
        try:
            re.compile(console)
        except re.error as exc:
            problem(("ready", "console"), f"{console!r} is not a regular expression: {exc}; expected one in Python "
                                          "syntax (escape a literal ( [ * + ? with a backslash)")
        log = (data.get("console") or {}).get("log")
        if not log:
            problem(("ready", "console"), "the console is read from its log, but the domain has no console log; "
                                          "expected console: {log: PATH} on the domain")
    return Ready(address=bool(r.get("address", False)), tcp=tcp, console=console, agent=bool(r.get("agent", False)))

