"""The command line: the only module that prints or exits.

Two error channels: a `ReconcileError` (bad spec, libvirt refusal, unreachable host) is
printed as a clear message and exits 1, its traceback only with -v; anything else is a bug
and is reported as an internal error with its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence

from . import render, specs
from .errors import ReconcileError, SpecError
from .executor import DEFAULT_PARALLEL, execute
from .model import ActionResult, Plan
from .planner import Options, plan_destroy
from .planner import plan as make_plan

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def default_uri(flag: str | None) -> str:
    """The virsh rule: --connect, else LIBVIRT_DEFAULT_URI, else qemu:///system."""
    return flag or os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--connect", metavar="URI", help="libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)")
    common.add_argument("--project", help="ownership scope (default: 'project' in the specs, else the directory name)")
    common.add_argument("-v", "--verbose", action="store_true", help="say more; show tracebacks of errors")
    common.add_argument("-q", "--quiet", action="store_true", help="print only the summary and errors")
    common.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format (default: text)")
    common.add_argument("paths", nargs="+", metavar="PATH", help="spec files or directories of *.yaml / *.yml files")

    parser = argparse.ArgumentParser(prog="reconcile", description="Make a libvirt host match a directory of YAML specs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("validate", parents=[common], help="check the specs; no libvirt")
    p = sub.add_parser("plan", parents=[common], help="show what apply would change")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when changes are pending, 0 when none")
    p.add_argument("--prune", action="store_true", help="include removing managed domains no spec mentions")
    a = sub.add_parser("apply", parents=[common], help="make the host match the specs")
    a.add_argument("--prune", action="store_true", help="remove managed domains of this project that no spec mentions")
    for sp in (p, a):
        sp.add_argument("--restart", action="store_true",
                        help="restart running domains whose changes need it, whatever their on_change says")
        sp.add_argument("--adopt", action="store_true",
                        help="take over existing domains that specs name but reconcile did not create")
        sp.add_argument("--allow-recreate", action="store_true",
                        help="allow identity-level changes (type, arch, disk format); a replaced disk loses its data")
    a.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, metavar="N", help=f"actions at once (default: {DEFAULT_PARALLEL})")
    a.add_argument("--dry-run", action="store_true", help="plan only; change nothing")
    d = sub.add_parser("destroy", parents=[common], help="remove everything these specs manage")
    d.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, metavar="N", help=f"actions at once (default: {DEFAULT_PARALLEL})")
    d.add_argument("--force", action="store_true", help="power off at once instead of an ACPI shutdown first")
    e = sub.add_parser("export", help="print the spec YAML of existing domains")
    e.add_argument("-c", "--connect", metavar="URI", help="libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)")
    e.add_argument("--project", help="project to write into the spec (default: none, the directory name applies)")
    e.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of errors")
    e.add_argument("names", nargs="+", metavar="DOMAIN", help="names of domains on the host")
    e.set_defaults(output="text", quiet=False)
    sub.add_parser("schema", help="print the JSON Schema of spec files (for editors and other tools)")
    return parser


class Console:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.json = args.output == "json"

    def out(self, text: str) -> None:
        print(text, flush=True)

    def info(self, text: str) -> None:
        if not self.args.quiet and not self.json:
            print(text, flush=True)

    def err(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        print(json.dumps(specs.load_schema(), indent=2, ensure_ascii=False), flush=True)
        return EXIT_OK
    console = Console(args)
    try:
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
        console.err(f"error: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        console.err("interrupted; run the same command again to converge")
        return 130
    except Exception:  # a bug: say so, with everything needed to report it
        traceback.print_exc()
        console.err("internal error: this is a bug in reconcile; please report it with the traceback above")
        return EXIT_ERROR


def run(args: argparse.Namespace, console: Console) -> int:
    if args.command == "export":
        return export(args, console)
    desired = specs.load(args.paths, project=args.project)
    if args.command == "validate":
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

    from .libvirt_host import LibvirtHost  # imported late: validate works without libvirt

    host = LibvirtHost(default_uri(args.connect))
    try:
        observed = host.observe(pools=desired.pools_of_interest(), volumes=desired.volumes_of_interest(),
                                seeds=desired.seeds_of_interest(), images=desired.images_of_interest(),
                                live={d.name for d in desired.domains})
        if args.command == "destroy":
            the_plan = plan_destroy(desired, observed)
        else:
            the_plan = make_plan(desired, observed, options=Options(
                prune=args.prune, restart=args.restart, adopt=args.adopt, allow_recreate=args.allow_recreate))

        if args.command == "plan" or (args.command == "apply" and args.dry_run):
            show_plan(the_plan, console)
            if the_plan.refusals:
                return EXIT_ERROR
            return EXIT_CHANGES if (getattr(args, "detailed_exitcode", False) and not the_plan.empty) else EXIT_OK
        return apply(the_plan, host, args, console)
    finally:
        host.close()


def show_plan(the_plan: Plan, console: Console) -> None:
    if console.json:
        console.out(render.dumps(render.plan_json(the_plan)))
    elif console.args.quiet:
        console.out(render.plan_summary(the_plan))
    else:
        console.out(render.plan_text(the_plan, verbose=console.args.verbose))


def apply(the_plan: Plan, host, args: argparse.Namespace, console: Console) -> int:
    if not console.json:
        show_plan(the_plan, console)

    def progress(result: ActionResult) -> None:
        console.info(render.result_line(result))

    if the_plan.actions:
        console.info("Applying:")
    result = execute(the_plan, host, parallel=args.parallel, force=getattr(args, "force", False), on_result=progress)
    if console.json:
        console.out(render.dumps(render.apply_json(result)))
    else:
        for r in result.results:
            if r.status.value in ("failed", "skipped") and args.quiet:
                console.err(render.result_line(r))
        for note in the_plan.refusals:
            console.err(f"refused: {note.resource.value} {note.name}: {note.message}")
        console.out(render.apply_recap(result))
    return EXIT_OK if result.ok else EXIT_ERROR


def export(args: argparse.Namespace, console: Console) -> int:
    """Spec YAML for existing domains, so a hand-made lab can be brought under management."""
    from . import export as exporter
    from .libvirt_host import LibvirtHost

    host = LibvirtHost(default_uri(args.connect))
    try:
        observed = host.observe(volumes=None, live=())
    finally:
        host.close()
    missing = [n for n in args.names if n not in observed.domains]
    if missing:
        raise ReconcileError(f"no domain named {', '.join(missing)} on {observed.uri}")
    doc = exporter.export(observed, args.names, project=args.project)
    console.out(specs.dump(doc))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
