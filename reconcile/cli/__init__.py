"""The command line: the only module that prints or exits.

Two error channels: a `ReconcileError` (bad spec, libvirt refusal, unreachable host) is
printed as a clear message and exits 1, its traceback only with -v; anything else is a bug
and is reported as an internal error with its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence

from . import render
from .. import spec as specs
from ..errors import ReconcileError, SpecError
from ..apply.executor import DEFAULT_PARALLEL, execute
from ..apply.lock import DEFAULT_LOCK_TIMEOUT, RunLock, clear_stale
from ..model import Action, ActionResult, Plan
from ..plan import Options, plan_destroy
from ..plan import plan as make_plan

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def default_uri(flag: str | None) -> str:
    """The virsh rule: --connect, else LIBVIRT_DEFAULT_URI, else qemu:///system."""
    return flag or os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"


COMMANDS = {
    "validate": "check the specs; no libvirt",
    "plan": "show what apply would change",
    "apply": "make the host match the specs",
    "destroy": "remove everything these specs manage",
    "export": "print the spec YAML of existing domains",
    "schema": "print the JSON Schema of spec files (for editors and other tools)",
}


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
            if name not in ("export", "schema"):
                _common_options(built[name])
    parser.set_defaults(subparsers=built)

    p, a, d, e = (built.get(n) for n in ("plan", "apply", "destroy", "export"))
    if p:
        p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when changes are pending, 0 when none")
        p.add_argument("--prune", action="store_true", help="include removing managed domains no spec mentions")
    if a:
        a.add_argument("--prune", action="store_true", help="remove managed domains of this project that no spec mentions")
        a.add_argument("--dry-run", action="store_true", help="plan only; change nothing")
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
    if d:
        d.add_argument("--force", action="store_true", help="power off at once instead of an ACPI shutdown first")
    for sp in filter(None, (a, d)):
        sp.add_argument("--parallel", type=_positive, default=DEFAULT_PARALLEL, metavar="N",
                        help=f"actions at once (default: {DEFAULT_PARALLEL})")
        sp.add_argument("--lock-timeout", type=_seconds, default=DEFAULT_LOCK_TIMEOUT, metavar="SECONDS",
                        help=f"how long to wait for another run of the project on this host (default: {DEFAULT_LOCK_TIMEOUT:g})")
        sp.add_argument("--break-lock", action="store_true",
                        help="remove the project's lock on the host even if its holder may still run")
    if e:
        e.add_argument("-c", "--connect", metavar="URI", help="libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)")
        e.add_argument("--project", help="project to write into the spec (default: none, the directory name applies)")
        e.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of errors")
        e.add_argument("-o", "--output", choices=("text", "json"), default="text",
                       help="text: the spec as YAML (default); json: the same spec as JSON")
        e.add_argument("names", nargs="+", metavar="DOMAIN", help="names of domains on the host")
        e.set_defaults(quiet=False)
    if built.get("schema"):
        built["schema"].add_argument("-o", "--output", choices=("text", "json"), default="json",
                                     help="the schema is JSON either way; accepted like every command's")
        built["schema"].set_defaults(quiet=False, verbose=False)
    return parser


def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--connect", metavar="URI", help="libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)")
    p.add_argument("--project", help="ownership scope (default: 'project' in the specs, else the directory name)")
    p.add_argument("-v", "--verbose", action="store_true", help="say more; show tracebacks of errors")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary and errors")
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
    if extra:
        sub = args.subparsers.get(args.command, parser)
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


class Console:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.json = args.output == "json"
        # apply/destroy with -q or JSON: no plan, no per-action lines; only recap and errors
        self.quiet_apply = args.quiet or self.json

    def out(self, text: str) -> None:
        print(text, flush=True)

    def info(self, text: str) -> None:
        if not self.args.quiet and not self.json:
            print(text, flush=True)

    def err(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        """Something the user should know while waiting; on stderr, so JSON stays clean."""
        if not self.args.quiet:
            print(text, file=sys.stderr, flush=True)


class Progress:
    """Progress of an apply: a line per finished action, and a live view on a terminal.

    Without a terminal (a pipeline log) each action prints one line with its duration when
    it ends. On a terminal the same lines scroll above a status line that shows what runs
    right now and for how long, redrawn a few times a second.
    """

    def __init__(self, console: Console, total: int, live: bool):
        self.console, self.total, self.live = console, total, live
        self.running: dict[str, tuple[Action, float]] = {}
        self.done = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._redraw, name="reconcile-progress", daemon=True) if live else None
        self._status_shown = False

    def __enter__(self) -> Progress:
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        with self._lock:
            self._clear()

    def started(self, action: Action, when: float) -> None:
        with self._lock:
            self.running[action.id] = (action, time.monotonic())

    def finished(self, result: ActionResult) -> None:
        with self._lock:
            self.running.pop(result.action.id, None)
            self.done += 1
            if self.console.quiet_apply:
                return
            self._clear()
            print(render.result_line(result), flush=True)
            self._draw()

    def _clear(self) -> None:
        if self._status_shown:
            sys.stdout.write("\r\x1b[K")
            self._status_shown = False

    def _draw(self) -> None:
        if not self.live or not self.running:
            return
        now = time.monotonic()
        parts = [f"{a.kind.value} {a.name} {now - t0:.0f}s" for a, t0 in sorted(self.running.values(), key=lambda v: v[1])]
        text = f"[{self.done}/{self.total}] running: " + ", ".join(parts)
        width = max(20, _terminal_width() - 1)
        sys.stdout.write("\r\x1b[K" + (text if len(text) <= width else text[: width - 3] + "..."))
        sys.stdout.flush()
        self._status_shown = True

    def _redraw(self) -> None:
        while not self._stop.wait(0.25):
            with self._lock:
                self._clear()
                self._draw()


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns or 80  # 0: a terminal with no size set
    except OSError:
        return 80


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse(argv)
    except UsageError as exc:
        if _wants_json(argv):
            print(render.dumps(render.error_json(argv[0] if argv else "", exc.kind, str(exc))), flush=True)
        else:
            print(f"{exc.usage}reconcile: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    if args.command == "schema":
        print(json.dumps(specs.load_schema(), indent=2, ensure_ascii=False), flush=True)
        return EXIT_OK
    console = Console(args)
    try:
        with _few_collections():
            return run(args, console)
    except SpecError as exc:
        if console.json:
            console.out(render.dumps({"format_version": render.FORMAT_VERSION, "ok": False,
                                      "diagnostics": render.diagnostics_json(exc.diagnostics)}))
        else:
            console.err(render.diagnostics_text(exc.diagnostics))
            console.err(f"{exc}; nothing was changed on the host.")
        return EXIT_ERROR
    except ReconcileError as exc:
        if args.verbose:
            traceback.print_exc()
        if console.json:
            console.out(render.dumps(render.error_json(args.command, getattr(exc, "kind", "error"), str(exc))))
        console.err(f"error: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        if console.json:
            console.out(render.dumps(render.error_json(args.command, "interrupted", "interrupted")))
        console.err("interrupted; run the same command again to converge")
        return 130
    except Exception as exc:  # a bug: say so, with everything needed to report it
        traceback.print_exc()
        if console.json:
            console.out(render.dumps(render.error_json(args.command, "internal error", repr(exc))))
        console.err("internal error: this is a bug in reconcile; please report it with the traceback above")
        return EXIT_ERROR


def _wants_json(argv: list[str]) -> bool:
    """Whether a command line that did not parse asked for JSON: then the error is JSON too."""
    for i, arg in enumerate(argv):
        if arg in ("-o", "--output") and argv[i + 1:i + 2] == ["json"]:
            return True
        if arg in ("-ojson", "--output=json"):
            return True
    return False


@contextlib.contextmanager
def _few_collections() -> Iterator[None]:
    """Python's cycle collector runs every 700 new objects and, now and then, walks them all;
    a run builds hundreds of thousands (parsed YAML and XML, the model) that reference
    counting frees, so those walks were a third of a plan of 10,000 domains. Collect
    rarely while the command runs."""
    before = gc.get_threshold()
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def run(args: argparse.Namespace, console: Console) -> int:
    if args.command == "export":
        return export(args, console)
    if args.command == "validate":
        return validate(specs.load(args.paths, project=args.project), console)

    from ..host import LibvirtHost  # imported late: validate works without libvirt

    host = LibvirtHost(default_uri(args.connect))
    try:
        host.connect_early()  # the connection opens while the specs load
        desired = specs.load(args.paths, project=args.project)
        return act(args, desired, host, console)
    finally:
        host.close()


def validate(desired, console: Console) -> int:
    if console.json:
        console.out(render.dumps({"format_version": render.FORMAT_VERSION, "ok": True, "diagnostics": [],
                                  "expected_on_host": render.references_json(desired.expected_on_host)}))
    else:
        console.out(f"{len(desired.files)} file{'s' if len(desired.files) != 1 else ''} valid: "
                    f"{len(desired.domains)} domains, {len(desired.pools)} pools, {len(desired.networks)} networks, "
                    f"{len(desired.images)} images "
                    f"(project '{desired.project}').")
        if desired.expected_on_host:
            console.info(render.references_text(desired.expected_on_host))
    return EXIT_OK


def act(args: argparse.Namespace, desired, host, console: Console) -> int:
    acting = args.command == "destroy" or (args.command == "apply" and not args.dry_run)
    removed = clear_stale(host, desired.project)
    if removed:
        console.note(removed)
    if not acting:
        the_plan = make_plan_for(args, desired, host)
        show_plan(the_plan, console)
        if the_plan.refusals:
            return EXIT_ERROR
        return EXIT_CHANGES if (getattr(args, "detailed_exitcode", False) and not the_plan.empty) else EXIT_OK
    # The lock is taken only when there is something to do: a plan without actions changes
    # nothing, whatever another run is doing, so a no-op apply neither waits for a busy
    # lock nor writes one. Otherwise the plan is made again under the lock, so that it sees
    # what a run that held it left.
    if not args.break_lock:
        the_plan = make_plan_for(args, desired, host)
        if not the_plan.actions:
            return apply(the_plan, host, args, console)
    lock = RunLock(host, desired.project, command=f"reconcile {args.command}", on_wait=console.note)
    try:
        lock.acquire(timeout=args.lock_timeout, break_lock=args.break_lock)
        return apply(make_plan_for(args, desired, host), host, args, console)
    finally:
        lock.release()


def make_plan_for(args: argparse.Namespace, desired, host) -> Plan:
    observed = host.observe(pools=desired.pools_of_interest(), volumes=desired.volumes_of_interest(),
                            seeds=desired.seeds_of_interest(), heads=desired.heads_of_interest(),
                            live={d.name for d in desired.domains},
                            machines=any(d.machine for d in desired.domains),
                            networks=desired.networks_of_interest(), project=desired.project)
    if args.command == "destroy":
        return plan_destroy(desired, observed)
    return make_plan(desired, observed, options=Options(
        prune=args.prune, restart=args.restart, adopt=args.adopt, allow_recreate=args.allow_recreate,
        prune_all=args.prune_all))


def show_plan(the_plan: Plan, console: Console) -> None:
    if console.json:
        console.out(render.dumps(render.plan_json(the_plan)))
    elif console.args.quiet:
        console.out(render.plan_summary(the_plan))
    else:
        console.out(render.plan_text(the_plan, verbose=console.args.verbose))


def apply(the_plan: Plan, host, args: argparse.Namespace, console: Console) -> int:
    if not console.quiet_apply:
        show_plan(the_plan, console)
    if the_plan.actions:
        console.info(f"Applying ({min(args.parallel, len(the_plan.actions))} at a time):")
    live = not console.quiet_apply and sys.stdout.isatty()
    with Progress(console, len(the_plan.actions), live) as progress:
        result = execute(the_plan, host, parallel=args.parallel, force=getattr(args, "force", False),
                         on_result=progress.finished, on_start=progress.started)
    if console.json:
        console.out(render.dumps(render.apply_json(result)))
    else:
        if args.quiet:
            for r in result.results:
                if r.status.value in ("failed", "skipped"):
                    console.err(render.result_line(r))
        for note in the_plan.refusals:
            console.err(f"refused: {note.resource.value} {note.name}: {note.message}")
        console.out(render.apply_recap(result))
    if result.connection_lost:
        console.err(lost_connection_message(result, host.uri, args.command))
    return EXIT_OK if result.ok else EXIT_ERROR


def lost_connection_message(result, uri: str, command: str) -> str:
    """What a run cut off from libvirtd did and did not do, counted from its results."""
    cut = sum(1 for r in result.results if r.connection_lost)
    skipped = sum(1 for r in result.results if r.status.value == "skipped")
    parts = []
    if cut:
        parts.append(f"{cut} action{'s were' if cut != 1 else ' was'} under way when it broke and "
                     f"{'are' if cut != 1 else 'is'} listed as failed, though libvirtd may have done "
                     f"{'them' if cut != 1 else 'it'}")
    if skipped:
        parts.append(f"{skipped} not attempted {'are' if skipped != 1 else 'is'} listed as skipped")
    done = "; ".join(parts) or "no action was affected"
    return (f"error: lost the connection to libvirtd at {uri} during {command}: {done}. Every action re-checks "
            "the host before it acts: run the same command again once libvirtd answers, and it finishes what is "
            "left.")


def export(args: argparse.Namespace, console: Console) -> int:
    """Spec YAML for existing domains, so a hand-made lab can be brought under management."""
    from ..codec import export as exporter
    from ..host import LibvirtHost

    host = LibvirtHost(default_uri(args.connect))
    try:
        observed = host.observe(volumes=None, live=())
    finally:
        host.close()
    missing = [n for n in args.names if n not in observed.domains]
    if missing:
        raise ReconcileError(f"no domain named {', '.join(missing)} on {observed.uri}")
    doc = exporter.export(observed, args.names, project=args.project)
    console.out(render.dumps(doc) if console.json else specs.dump(doc))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
