"""The command line's grammar: the commands, their options, and the checks of option
values; a usage error exits 1 with the command's own usage.
"""

from __future__ import annotations

import argparse
import math
import os

from ..apply.executor import DEFAULT_PARALLEL
from ..apply.lock import DEFAULT_LOCK_TIMEOUT
from ..apply.ready import DEFAULT_WAIT_TIMEOUT
from ..errors import ReconcileError

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def default_uri(flag: str | None) -> str:
    """The virsh rule: --connect, else LIBVIRT_DEFAULT_URI, else qemu:///system."""
    return flag or os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"


COMMANDS = {
    "validate": "check the specs; no libvirt",
    "plan": "show what apply would change",
    "apply": "make the host match the specs",
    "destroy": "remove everything these specs manage",
    "rebuild": "return domains to their first boot: fresh overlays and seed, same identity",
    "status": "show each domain's state, addresses, consoles and readiness",
    "wait": "wait until the running domains are ready",
    "inventory": "print an Ansible inventory of the domains",
    "ssh-config": "print ssh_config Host blocks for the domains",
    "export": "print the spec YAML of existing domains",
    "show": "print a plan file written by plan --out",
    "import": "print the spec YAML of libvirt domain XML files, for domains not defined yet",
    "schema": "print the JSON Schema of spec files (for editors and other tools)",
}


# The commands whose plan (and results) can be printed as Markdown, for a pull-request comment.
MARKDOWN_COMMANDS = ("plan", "apply", "rebuild")


class UsageError(ReconcileError):
    """The command line itself is wrong (an unknown option, a bad value)."""

    kind = "usage"

    def __init__(self, message: str, usage: str):
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 1 like every other error (2 is what `plan
    --detailed-exitcode` says for pending changes), and an option is only ever its whole
    name, so a new option never changes what an abbreviation meant."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message, self.format_usage())


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that command's (building them all is a millisecond
    that every run would pay; the list of commands shows in `reconcile --help`, which
    builds them all)."""
    parser = _Parser(prog="reconcile", description="Make a libvirt host match a directory of YAML specs.")
    parser.add_argument("--version", action="version", version=f"reconcile {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    built: dict[str, argparse.ArgumentParser] = {}
    for name, text in COMMANDS.items():
        if only is None or name == only:
            built[name] = sub.add_parser(name, help=text)
            if name not in ("export", "import", "schema", "show"):
                _common_options(built[name], markdown=name in MARKDOWN_COMMANDS)
    parser.set_defaults(subparsers=built)

    p, a, d, e, r = (built.get(n) for n in ("plan", "apply", "destroy", "export", "rebuild"))
    if p:
        p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when changes are pending, 0 when none")
        p.add_argument("--prune", action="store_true", help="include removing managed domains no spec mentions")
        p.add_argument("--out", metavar="FILE",
                       help="also write the plan to FILE, for review: `reconcile apply FILE` applies exactly it, "
                            "or refuses if the host or the specs changed since")
    if a:
        a.add_argument("--prune", action="store_true", help="remove managed domains of this project that no spec mentions")
    for sp in filter(None, (p, a)):
        sp.add_argument("--prune-all", action="store_true",
                        help="with --prune: also prune domains made from files this run was not given, even if "
                             "that removes every domain of the project")
        sp.add_argument("--restart", action="store_true",
                        help="restart running domains whose changes need it, whatever their on_change says")
        sp.add_argument("--adopt", action="store_true",
                        help="take over existing domains that specs name but reconcile did not create")
        sp.add_argument("--allow-recreate", action="store_true",
                        help="allow identity-level changes (type, arch, disk format); a replaced disk loses its data")
    if r:
        r.add_argument("--start", action="store_true", help="start the rebuilt domains that were stopped too")
        r.add_argument("--refresh-images", action="store_true",
                       help="check the source of every image the rebuilt overlays are built on (as refresh: true "
                            "does for one) and build them on a new version where it changed")
    for sp in filter(None, (a, r)):
        sp.add_argument("--dry-run", action="store_true", help="plan only; change nothing")
        sp.add_argument("--wait", action="store_true",
                        help="then wait until every domain it starts is ready (its ready: conditions; by default an "
                             "address on a DHCP network), each from its start")
    for sp in filter(None, (a, r, built.get("wait"))):
        # None until given, so that a timeout without --wait can be told apart from the default
        sp.add_argument("--wait-timeout", type=_seconds, default=None, metavar="SECONDS",
                        help=f"how long each domain may take to be ready (default: {DEFAULT_WAIT_TIMEOUT:g})")
    if built.get("inventory"):
        built["inventory"].add_argument("--list", action="store_true",
                                        help="print the JSON of Ansible's dynamic inventory protocol (for an "
                                             "inventory script); default: a YAML inventory")
    if d:
        d.add_argument("--force", action="store_true", help="power off at once instead of an ACPI shutdown first")
    for sp in filter(None, (a, d, r)):
        sp.add_argument("--parallel", type=_positive, default=DEFAULT_PARALLEL, metavar="N",
                        help=f"actions at once (default: {DEFAULT_PARALLEL})")
        sp.add_argument("--lock-timeout", type=_seconds, default=DEFAULT_LOCK_TIMEOUT, metavar="SECONDS",
                        help=f"how long to wait for another run of the project on this host (default: {DEFAULT_LOCK_TIMEOUT:g})")
        sp.add_argument("--break-lock", action="store_true",
                        help="remove the project's lock on the host even if its holder may still run")
    _reading_options(built)
    if built.get("schema"):
        built["schema"].add_argument("-o", "--output", choices=("text", "json"), default="json",
                                     help="the schema is JSON either way; accepted like every command's")
        built["schema"].set_defaults(quiet=False, verbose=False)
    return parser


def _reading_options(built: dict[str, argparse.ArgumentParser]) -> None:
    """The options of the commands that read rather than plan: export, import, show."""
    e, i = built.get("export"), built.get("import")
    for sp in filter(None, (e, i)):
        sp.add_argument("-c", "--connect", metavar="URI", help="libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)")
        sp.add_argument("--project", help="project to write into the spec (default: none, the directory name applies)")
        sp.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of errors")
        sp.add_argument("-o", "--output", choices=("text", "json"), default="text",
                        help="text: the spec as YAML (default); json: the same spec as JSON")
        sp.set_defaults(quiet=False)
    if e:
        e.add_argument("--all", action="store_true",
                       help="every domain on the host (but those another project manages)")
        e.add_argument("--match", action="append", metavar="PATTERN",
                       help="with --all: only domains whose whole name matches this shell-style pattern (* ? [...]; "
                            "case counts; repeatable: any of them)")
        e.add_argument("names", nargs="*", metavar="DOMAIN", help="names of domains on the host")
    if i:
        i.add_argument("files", nargs="+", metavar="FILE", help="libvirt domain XML files, as virsh define reads them")
    if built.get("show"):
        built["show"].add_argument("-o", "--output", choices=("text", "json"), default="text",
                                   help="text: the plan as it was shown (default); json: its JSON document")
        built["show"].add_argument("file", metavar="FILE", help="a plan file written by `reconcile plan --out`")
        built["show"].set_defaults(quiet=False, verbose=False)


def _common_options(p: argparse.ArgumentParser, markdown: bool = False) -> None:
    p.add_argument("-c", "--connect", metavar="URI", help="libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)")
    p.add_argument("--project", help="ownership scope (default: 'project' in the specs, else the directory name)")
    p.add_argument("--host", action="append", metavar="NAME",
                   help="only this host of the specs' hosts (repeatable; 'default' is the default connection)")
    p.add_argument("-v", "--verbose", action="store_true", help="say more; show tracebacks of errors")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary and errors")
    if markdown:
        p.add_argument("-o", "--output", choices=("text", "json", "markdown"), default="text",
                       help="output format (default: text; markdown: one document for a pull-request comment)")
    else:
        p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format (default: text)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="spec files or directories of *.yaml / *.yml files")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; expected 1 or more") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 1 or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number of seconds, 0 or more")
    return value


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("reconcile")
    except PackageNotFoundError:
        return "(not installed)"


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line; what a command does not know is reported with that command's
    usage, not the top-level one."""
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args, extra = parser.parse_known_args(argv)
    sub = args.subparsers.get(args.command, parser)
    if extra:
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in ("apply", "rebuild"):
        if args.wait and args.dry_run:
            sub.error("--wait: a --dry-run starts nothing to wait for")
        if not args.wait and args.wait_timeout is not None:
            sub.error(f"--wait-timeout: {args.command} waits only with --wait")
    if args.command == "export":
        if args.all and args.names:
            sub.error("--all exports every domain; name domains or give --all, not both")
        if not args.all and not args.names:
            sub.error("expected the names of domains, or --all")
        if args.match and not args.all:
            sub.error("--match picks among every domain: add --all")
    if "wait_timeout" in vars(args) and args.wait_timeout is None:
        args.wait_timeout = DEFAULT_WAIT_TIMEOUT
    return args


def _wants_json(argv: list[str]) -> bool:
    """Whether a command line that did not parse asked for JSON: then the error is JSON too."""
    for i, arg in enumerate(argv):
        if arg in ("-o", "--output") and argv[i + 1:i + 2] == ["json"]:
            return True
        if arg in ("-ojson", "--output=json"):
            return True
    return False
