"""Error kinds of reconcile.

Two channels reach the user: a `ReconcileError` is expected (bad input, a libvirt refusal,
an unreachable host) and is printed as one clear message with exit 1; anything else is an
internal error and shows its traceback. libvirt's own exceptions never leave the adapter:
they are wrapped into the `HostError` kinds below, with the original chained as the cause.
"""

from __future__ import annotations

from dataclasses import dataclass


def shown_path(path: str) -> str:
    """A file name as messages and JSON show it: bytes that are not UTF-8 as \\xNN escapes,
    never lone surrogates (which no UTF-8 output can hold)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class ReconcileError(Exception):
    """An error we expect and can explain; the CLI prints it without a traceback."""


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One located problem in the specs: `file:line:col: resource 'x': field: message`."""

    file: str
    line: int
    column: int
    field: str
    message: str
    resource: str = ""

    def __str__(self) -> str:
        file = shown_path(self.file)
        where = f"{file}:{self.line}:{self.column}" if self.line else file
        parts = [where]
        if self.resource:
            parts.append(f"resource {self.resource!r}")  # quoted, so a newline in a name stays visible
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)


class SpecError(ReconcileError):
    """The specs are invalid; carries every diagnostic found, not only the first."""

    outcome = "nothing was changed on the host"  # what the run did not do, said after the count

    def __init__(self, diagnostics: list[Diagnostic], where: str = "in the specs"):
        self.diagnostics = sorted(diagnostics)
        count = len(self.diagnostics)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} {where}")


class NotExpressible(SpecError):
    """Domains (on the host, or in domain XML files) hold what the spec language cannot say,
    so no spec is printed for them; carries every problem found, each at its domain and field."""

    outcome = "no spec was printed"

    def __init__(self, diagnostics: list[Diagnostic], where: str):
        super().__init__(diagnostics, where)
        # a domain's problems together, whichever field they are at
        self.diagnostics.sort(key=lambda d: (d.file, d.resource, d.line, d.column, d.field, d.message))


class HostError(ReconcileError):
    """A libvirt call failed. `subject` names the resource and the action for the user.

    `transient` marks a failure the host itself says may pass if tried again (a system
    call that answered EAGAIN or EINTR), as opposed to one that will fail the same way.
    """

    kind = "host error"

    def __init__(self, message: str, subject: str = "", transient: bool = False):
        self.subject = subject
        self.transient = transient
        super().__init__(f"{subject}: {message}" if subject else message)


class NotFound(HostError):
    kind = "not found"


class Conflict(HostError):
    kind = "conflict"


class HostUnavailable(HostError):
    kind = "host unavailable"


class ConnectionLost(HostUnavailable):
    """The connection to libvirtd broke mid-run: every later call would fail the same way."""


class PermissionDenied(HostError):
    kind = "permission denied"


class InvalidRequest(HostError):
    kind = "refused by libvirt"
