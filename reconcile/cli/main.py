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
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence

from .. import spec as specs
from ..apply import sources
from ..apply.executor import execute
from ..apply.lock import RunLock
from ..errors import ReconcileError, SpecError
from ..model import Plan
from ..plan import Options, plan_destroy, plan_rebuild
from ..plan import plan as make_plan
from . import markdown, render
from . import reviewed as plan_file
from .hosts import clear_stale_lock, many_hosts, run_many
from .output import Output, Progress
from .parser import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, UsageError, _wants_json, default_uri, parse

LAB_COMMANDS = ("status", "wait", "inventory", "ssh-config")


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
    console = Output(args)
    try:
        with _few_collections():
            return run(args, console)
    except SpecError as exc:
        if console.json:
            console.out(render.dumps({"format_version": render.FORMAT_VERSION, "ok": False,
                                      "diagnostics": render.diagnostics_json(exc.diagnostics)}))
        else:
            console.err(render.diagnostics_text(exc.diagnostics))
            console.err(f"{exc}; {exc.outcome}.")
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


def run(args: argparse.Namespace, console: Output) -> int:
    if args.command in ("export", "import"):
        from . import adopt  # imported late: the other commands need none of it

        return adopt.export(args, console) if args.command == "export" else adopt.import_files(args, console)
    if args.command == "show":
        return show(args, console)
    if args.command == "validate":
        return validate(specs.load(args.paths, project=args.project, resolve_secrets=False), console)

    from ..host import LibvirtHost  # imported late: validate works without libvirt

    reviewed = None
    if args.command == "apply" and len(args.paths) == 1 and plan_file.is_plan_file(args.paths[0]):
        reviewed = plan_file.read(args.paths[0])
        args.paths = list(reviewed.paths)
        for option in plan_file.OPTIONS:  # the plan's, whatever this command line says
            setattr(args, option, bool(reviewed.options.get(option, False)))
        if args.project is None:
            args.project = reviewed.options.get("project")
    host = LibvirtHost(default_uri(args.connect))
    try:
        host.connect_early()  # the connection opens while the specs load
        if args.command == "rebuild":
            args.paths, args.names = split_names(args.paths)
        # secrets are read only by the commands that build or compare seeds
        desired = specs.load(args.paths, project=args.project,
                             resolve_secrets=args.command in ("plan", "apply", "rebuild"))
        if args.command == "rebuild":
            check_names(args.names, args.paths, desired)
        if reviewed is not None and (problems := plan_file.spec_changes(reviewed, desired)):
            raise ReconcileError(plan_file.refusal(reviewed, problems))
        if many_hosts(desired, args) or reviewed is not None or getattr(args, "out", None):
            host.close()  # each host opens its own connection, the default one too if the run uses it
            if args.command in LAB_COMMANDS:
                from .lab import run_lab_many

                return run_lab_many(args, desired, console, LibvirtHost)
            return run_many(args, desired, console, LibvirtHost, observe_for, plan_from, reviewed)
        if args.command in LAB_COMMANDS:
            from .lab import run_lab

            return run_lab(args, desired, host, console)
        return act(args, desired, host, console)
    finally:
        host.close()


def split_names(arguments: list[str]) -> tuple[list[str], tuple[str, ...]]:
    """`rebuild PATHS... [NAME...]`: what exists on disk is a spec path, the rest domain names."""
    paths = [a for a in arguments if os.path.exists(a)]
    if not paths:
        raise ReconcileError(f"none of {' '.join(arguments)} is a spec file or directory; expected "
                             "`reconcile rebuild PATHS... [DOMAIN...]`")
    return paths, tuple(a for a in arguments if not os.path.exists(a))


def check_names(names: tuple[str, ...], paths: list[str], desired) -> None:
    """Every name is a domain of the specs, and no path given is also one: a file named
    like a domain in the working directory would silently widen the rebuild to all."""
    from ..spec.formats import closest

    known = [d.name for d in desired.domains]
    for path in paths:
        if path in known:
            raise ReconcileError(f"{path!r} is both a file or directory here and a domain the specs name; write "
                                 f"./{path} for the path, or run from another directory to mean the domain")
    for name in names:
        if name not in known:
            close = closest(name, known)
            hint = f"; did you mean {close!r}?" if close else ""
            raise ReconcileError(f"{name!r} is neither a spec path nor a domain the specs name{hint}")


def validate(desired, console: Output) -> int:
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


def act(args: argparse.Namespace, desired, host, console: Output) -> int:
    acting = args.command == "destroy" or (args.command in ("apply", "rebuild") and not args.dry_run)
    removed = clear_stale_lock(host, desired.project)
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
    if not args.break_lock and args.command != "rebuild":  # a rebuild always has work
        the_plan = make_plan_for(args, desired, host)
        if not the_plan.actions:
            return apply(the_plan, host, args, console, desired)
    lock = RunLock(host, desired.project, command=f"reconcile {args.command}", on_wait=console.note)
    try:
        lock.acquire(timeout=args.lock_timeout, break_lock=args.break_lock)
        return apply(make_plan_for(args, desired, host), host, args, console, desired, done=lock.release)
    finally:
        lock.release()


def make_plan_for(args: argparse.Namespace, desired, host, moves: Options | None = None) -> Plan:
    return plan_from(args, desired, observe_for(args, desired, host), moves)


def observe_for(args: argparse.Namespace, desired, host):
    """Read what the plan of this command needs of the host."""
    # A rebuild replaces the overlays and seeds: it reads only the bases' first bytes.
    rebuilding = args.command == "rebuild"
    # A refresh deletes an old version only when nothing on the host is built on it: every
    # volume of the host is read then.
    refreshing = rebuilding and bool(refreshed_images(args, desired))
    return host.observe(pools=desired.pools_of_interest(),
                        volumes=None if refreshing else desired.volumes_of_interest(),
                        seeds=set() if rebuilding else desired.seeds_of_interest(),
                        heads=desired.bases_of_interest() if rebuilding else desired.heads_of_interest(),
                        live={d.name for d in desired.domains},
                        machines=any(d.machine for d in desired.domains),
                        networks=desired.networks_of_interest(), project=desired.project,
                        images={(i.pool, i.name) for i in desired.images},
                        # plan and apply note (and with --prune remove) the pools and networks
                        # the project made that no spec declares: every definition is read
                        records=args.command in ("plan", "apply"))


def refreshed_images(args: argparse.Namespace, desired) -> list:
    return [i for i in desired.images if i.refresh or getattr(args, "refresh_images", False)]


def plan_from(args: argparse.Namespace, desired, observed, moves: Options | None = None) -> Plan:
    """The plan of this command, from what was read. `moves` (many hosts): the domains on
    another host than their spec says, as the planner's options carry them."""
    moves = moves or Options()
    if args.command == "destroy":
        return plan_destroy(desired, observed)
    if args.command == "rebuild":
        names = tuple(n for n in args.names if any(d.name == n for d in desired.domains))
        if args.names and not names:  # the domains named are all on other hosts
            return Plan(project=desired.project, uri=observed.uri)
        return plan_rebuild(desired, observed, names, start=args.start,
                            refresh=probe_sources(refreshed_images(args, desired), observed))
    return make_plan(desired, observed, options=Options(
        prune=args.prune, restart=args.restart, adopt=args.adopt, allow_recreate=args.allow_recreate,
        prune_all=args.prune_all, elsewhere=dict(moves.elsewhere), moving_out=dict(moves.moving_out),
        held=dict(moves.held), stuck=dict(moves.stuck)))


def probe_sources(images, observed) -> dict:
    """What each image's source says now (or why it could not be read), reading as little
    of it as it can: the planner decides from these what to import."""
    out = {}
    for image in images:
        record = observed.images.get((image.pool, image.name))
        try:
            out[image.name] = sources.probe(image.source, image.sha256, record.stamp if record else None)
        except sources.SourceError as exc:
            out[image.name] = str(exc)
    return out


def show_plan(the_plan: Plan, console: Output) -> None:
    if console.json:
        console.out(render.dumps(render.plan_json(the_plan)))
    elif console.markdown:
        console.out(markdown.plan_document(the_plan))
    elif console.args.quiet:
        console.out(render.plan_summary(the_plan))
    else:
        console.out(render.plan_text(the_plan, verbose=console.args.verbose))


def apply(the_plan: Plan, host, args: argparse.Namespace, console: Output, desired=None,
          done: Callable[[], None] | None = None) -> int:
    """Run the plan, and with --wait wait for readiness; `done` (the lock's release) is
    called when the host has been changed, before the wait: waiting changes nothing."""
    if not console.quiet_apply:
        show_plan(the_plan, console)
    if the_plan.actions:
        console.info(f"Applying ({min(args.parallel, len(the_plan.actions))} at a time):")
    live = not console.quiet_apply and sys.stdout.isatty()
    readiness = None
    with Progress(console, len(the_plan.actions), live) as progress:
        waiting = None
        if getattr(args, "wait", False):
            from .lab import ApplyWait

            waiting = ApplyWait(args, desired, the_plan, host, progress.line)

        def finished(result) -> None:
            progress.finished(result)
            if waiting is not None:
                waiting.finished(result)

        result = execute(the_plan, host, parallel=args.parallel, force=getattr(args, "force", False),
                         on_result=finished, on_start=progress.started)
        if done is not None:
            done()
        if waiting is not None:
            left = waiting.waiter.pending()
            if left:
                console.info(f"Waiting for {left} domain{'s' if left != 1 else ''} to be ready (at most "
                             f"{args.wait_timeout:g}s each from its start):")
            readiness = waiting.finish()
    if console.json:
        doc = render.apply_json(result)
        if readiness is not None:
            from .lab import readiness_json

            doc["readiness"] = [readiness_json(r) for r in readiness]
            doc["ok"] = doc["ok"] and all(r.ready for r in readiness)
        console.out(render.dumps(doc))
    elif console.markdown:
        console.out(markdown.apply_document(result, args.command, readiness or ()))
    else:
        if args.quiet:
            for r in result.results:
                if r.status.value in ("failed", "skipped"):
                    console.err(render.result_line(r))
        for note in the_plan.refusals:
            console.err(f"refused: {note.resource.value} {note.name}: {note.message}")
        console.out(render.apply_recap(result))
        if readiness is not None:
            from .lab import report_readiness

            report_readiness(readiness, args, console, doc=None)
    if result.connection_lost:
        console.err(lost_connection_message(result, host.uri, args.command))
    ready = readiness is None or all(r.ready for r in readiness)
    return EXIT_OK if result.ok and ready else EXIT_ERROR


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


def show(args: argparse.Namespace, console: Output) -> int:
    """A plan file as it was reviewed: its text, or with -o json the plan's JSON document."""
    reviewed = plan_file.read(args.file)
    if console.json:
        console.out(render.dumps(reviewed.document))
        return EXIT_OK
    hosts = ", ".join(f"{h.name} ({h.uri})" for h in reviewed.hosts)
    console.out(f"# {args.file}: project {reviewed.project}, reconcile {reviewed.version}, hosts {hosts}")
    console.out(reviewed.text)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
