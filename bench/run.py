"""How fast reconcile is, next to the least any libvirt-python script could do.

    .venv/bin/python bench/run.py [--quick] [--skip-real] [--repeat R]

Prints, for libvirt's in-process test:///default and for the real qemu:///system:
- plan time for N managed domains (each with one volume), against the floor: loading the
  same YAML with PyYAML plus the reads a plan needs (one domain listing, one XML per domain
  and the live one of each running domain the specs name, the pool's volume listing and
  one XML per volume), serially;
- cold apply, no-op apply and destroy of N running domains with a volume each, at
  --parallel 1 and at the default, against the serial floor: per domain, create the
  volume, define and start (apply); the plan reads (no-op); power off, delete the volume
  and undefine (destroy). destroy is timed with --force: the test domains boot no OS, so
  an ACPI shutdown would only wait out stop_timeout. The no-ops are timed once the
  domains have finished booting into their firmware (each burns CPU for a while after
  its start, which would slow whatever runs beside it), interleaved with the floor's.

Everything is timed in one process, after imports (the import cost of the command line is
printed once, apart). Each figure is the best of --repeat runs. Plans and no-ops run
several times, each interleaved with its floor (plans of up to 200 domains twenty times,
of 1000 three, no-ops ten times at each parallelism), since one stall of a shared daemon
would swamp a figure of milliseconds; a no-op is set against the floor timed beside it.
Everything created on the real daemon is named $RECONCILE_BENCH_PREFIX (default
"rcbench-") and removed at the end, also on failure. Run it on a quiet machine: it
measures wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reconcile import cli  # noqa: E402
from reconcile.codec import domain as domxml  # noqa: E402
from reconcile.codec import ownership  # noqa: E402
from reconcile import spec as specs  # noqa: E402
from reconcile.apply.executor import DEFAULT_PARALLEL  # noqa: E402
from reconcile.model import Ownership, VolumeRef  # noqa: E402

PREFIX = os.environ.get("RECONCILE_BENCH_PREFIX", "rcbench-")
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the fastest YAML load there is
TEST_URI, SYSTEM_URI = "test:///default", "qemu:///system"
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def domain_type() -> str:
    return "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "qemu"


def write_specs(root: Path, project: str, names: list[str], pool: str, state: str, dtype: str,
                pool_path: str | None = None) -> None:
    """N domains, 100 to a file, like a real specs directory."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    head = {"project": project}
    if pool_path:
        head["pools"] = [{"name": pool, "path": pool_path}]
    for i in range(0, len(names), 100):
        doc = dict(head) if i == 0 else {"project": project}
        doc["domains"] = [{"name": n, "type": dtype, "memory": "64MiB", "state": state, "stop_timeout": 0,
                           "disks": [{"pool": pool, "size": "16MiB"}]} for n in names[i:i + 100]]
        (root / f"d{i // 100:03d}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def quiet_cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(list(args))
    if code != 0:
        raise SystemExit(f"reconcile {' '.join(args)} exited {code}:\n{out.getvalue()}")
    return out.getvalue()


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


# -- the floor: what a bare libvirt-python script needs -----------------------------------------

def floor_read(uri: str, spec_dir: Path, pool: str, volumes: set[str]) -> None:
    """The reads a plan needs: every domain's config, and the live XML of the running ones
    the specs name (a change waiting for a restart shows as config != live)."""
    named = set()
    for f in sorted(spec_dir.glob("*.yaml")):
        named |= {d["name"] for d in yaml.load(f.read_text(), Loader=LOADER).get("domains", [])}
    conn = libvirt.open(uri)
    for dom in conn.listAllDomains(0):
        try:
            dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        except libvirt.libvirtError:
            pass  # undefined meanwhile by someone else
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        if dom.name() in named:
            try:
                dom.XMLDesc(0)
            except libvirt.libvirtError:
                pass
    for vol in conn.storagePoolLookupByName(pool).listAllVolumes(0):
        if vol.name() in volumes:
            vol.XMLDesc(0)
    conn.close()


def floor_apply(uri: str, pool: str, work: list[tuple[str, str, str]]) -> None:
    conn = libvirt.open(uri)
    p = conn.storagePoolLookupByName(pool)
    for _name, vol_xml, dom_xml in work:
        p.createXML(vol_xml, 0)
        conn.defineXML(dom_xml).create()
    conn.close()


def floor_destroy(uri: str, pool: str, names: list[str]) -> None:
    conn = libvirt.open(uri)
    p = conn.storagePoolLookupByName(pool)
    for name in names:
        dom = conn.lookupByName(name)
        dom.destroy()
        p.storageVolLookupByName(f"{name}-vda.qcow2").delete(0)
        dom.undefine()
    conn.close()


def bare_work(spec_dir: Path, project: str) -> list[tuple[str, str, str]]:
    """The volume and domain XML the floor script creates: the same as reconcile's."""
    desired = specs.load([str(spec_dir)])
    out = []
    for spec in desired.domains:
        disk = spec.disks[0]
        vol = ET.Element("volume")
        ET.SubElement(vol, "name").text = disk.volume
        ET.SubElement(vol, "capacity", {"unit": "bytes"}).text = str(disk.size)
        ET.SubElement(ET.SubElement(vol, "target"), "format", {"type": disk.format})
        owner = Ownership(project, spec.origin.file, ownership.spec_hash(spec), (VolumeRef(disk.pool, disk.volume),))
        out.append((spec.name, ET.tostring(vol, encoding="unicode"), domxml.domain_xml(spec, owner)))
    return out


# -- the measurements ---------------------------------------------------------------------------

def ratio(ours: float, floor: float) -> str:
    return f"{ours / floor:5.2f}x" if floor > 0 else "   -"


def plan_bench(uri: str, sizes: list[int], tmp: Path, repeat: int, pool: str, pool_path: str | None) -> None:
    keep = libvirt.open(uri)  # test:///default forgets everything when its last connection closes
    dtype = "qemu" if uri == TEST_URI else domain_type()
    for n in sizes:
        project = f"{PREFIX}plan{n}"
        names = [f"{project}-{i:05d}" for i in range(n)]
        spec_dir = tmp / f"plan-{n}"
        write_specs(spec_dir, project, names, pool, "stopped", dtype, pool_path)
        t0 = time.perf_counter()
        quiet_cli("apply", "-q", "-c", uri, str(spec_dir))
        setup = time.perf_counter() - t0
        try:
            out = quiet_cli("plan", "-q", "-c", uri, str(spec_dir))
            assert "No changes" in out, out
            ours, floor = [], []
            # interleaved, so both see the same load; a plan of milliseconds is timed more
            # often, since one stall of the shared daemon swamps a sample of it
            for _ in range(max(20, 2 * repeat) if n <= 200 else max(3, 2 * repeat) if n <= 1000 else repeat):
                ours.append(timed(quiet_cli, "plan", "-q", "-c", uri, str(spec_dir)))
                floor.append(timed(floor_read, uri, spec_dir, pool, {f"{x}-vda.qcow2" for x in names}))
            ours, floor = min(ours), min(floor)
            print(f"  plan  N={n:<6} reconcile {ours:7.3f}s   floor {floor:7.3f}s   ratio {ratio(ours, floor)}"
                  f"   (target <= 1.5x; set up by apply in {setup:.1f}s)", flush=True)
        finally:
            quiet_cli("destroy", "-q", "--force", "-c", uri, str(spec_dir))
    keep.close()


def apply_bench(sizes: list[int], tmp: Path, repeat: int, pool: str, pool_path: str) -> None:
    dtype = domain_type()
    for n in sizes:
        project = f"{PREFIX}run{n}"
        names = [f"{project}-{i:02d}" for i in range(n)]
        spec_dir = tmp / f"run-{n}"
        write_specs(spec_dir, project, names, pool, "running", dtype, pool_path)
        quiet_cli("apply", "-q", str(spec_dir))  # the pool, so the floor has one too
        work = bare_work(spec_dir, project)
        vols = {f"{x}-vda.qcow2" for x in names}
        figures: dict[str, list[float]] = {}

        def add(key: str, value: float) -> None:
            figures.setdefault(key, []).append(value)

        quiet_cli("destroy", "-q", "--force", str(spec_dir))
        for _ in range(repeat):
            add("floor apply", timed(floor_apply, SYSTEM_URI, pool, work))
            add("floor destroy", timed(floor_destroy, SYSTEM_URI, pool, names))
            for par in (1, DEFAULT_PARALLEL):
                add(f"apply p{par}", timed(quiet_cli, "apply", "-q", "--parallel", str(par), str(spec_dir)))
                # Domains just started burn CPU in their firmware for a while; the no-ops are
                # measured once they are quiet, interleaved with the floor's reads, ten times
                # each (a stall of the shared daemon would swamp one sample of milliseconds),
                # and each against the floor measured beside it.
                settle(names)
                for _ in range(10):
                    add(f"no-op p{par}", timed(quiet_cli, "apply", "-q", "--parallel", str(par), str(spec_dir)))
                    add(f"floor no-op p{par}", timed(floor_read, SYSTEM_URI, spec_dir, pool, vols))
                add(f"destroy p{par}", timed(quiet_cli, "destroy", "-q", "--force", "--parallel", str(par), str(spec_dir)))
        f = {k: min(v) for k, v in figures.items()}
        # the targets are set for twenty domains
        target = "   (target <= 0.5x at the default)" if n == 20 else ""
        for what in ("apply", "destroy"):
            floor = f[f"floor {what}"]
            line = f"  {what:<7} N={n:<3} floor {floor:7.3f}s"
            for par in (1, DEFAULT_PARALLEL):
                line += f"   --parallel {par}: {f[f'{what} p{par}']:7.3f}s {ratio(f[f'{what} p{par}'], floor)}"
            print(line + target, flush=True)
        line = f"  no-op   N={n:<3}"
        for par in (1, DEFAULT_PARALLEL):
            ours, floor = f[f"no-op p{par}"], f[f"floor no-op p{par}"]
            line += f"   --parallel {par}: {ours * 1000:5.1f} ms, floor {floor * 1000:5.1f} ms {ratio(ours, floor)}"
        print(line + ("   (target <= 1.5x)" if n == 20 else ""), flush=True)


def settle(names: list[str], quiet: float = 0.02, limit: float = 120.0) -> None:
    """Wait until the named running domains use less than `quiet` of a core each (idle in
    their firmware, twenty use about 0.2 of a core here)."""
    conn = libvirt.open(SYSTEM_URI)
    try:
        doms = [conn.lookupByName(n) for n in names]
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before, t0 = sum(d.info()[4] for d in doms), time.perf_counter()
            time.sleep(0.5)
            used = (sum(d.info()[4] for d in doms) - before) / 1e9 / (time.perf_counter() - t0)
            if used < quiet * len(doms):
                return
    finally:
        conn.close()


def cleanup(conn: libvirt.virConnect) -> None:
    """Remove every domain, network and pool (with its volumes) named with PREFIX, even half-made."""
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(PREFIX):
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
    for net in conn.listAllNetworks(0):
        if net.name().startswith(PREFIX):
            with contextlib.suppress(libvirt.libvirtError):
                if net.isActive():
                    net.destroy()
                net.undefine()
    for p in conn.listAllStoragePools(0):
        if p.name().startswith(PREFIX):
            with contextlib.suppress(libvirt.libvirtError):
                if p.isActive():
                    for vol in p.listAllVolumes(0):
                        vol.delete(0)
                    p.destroy()
                p.undefine()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (test driver up to 1000, real N=5 only)")
    ap.add_argument("--skip-real", action="store_true", help="only the test driver")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per apply figure, the best shown (default 1); plans of up to 200 domains "
                         "run max(20, 2R) times, of up to 1000 max(3, 2R)")
    args = ap.parse_args()

    load = os.getloadavg()[0]
    print(f"reconcile benchmark: {os.cpu_count()} cores, load {load:.2f}, default --parallel {DEFAULT_PARALLEL}, "
          f"libvirt {libvirt.getVersion() // 1000000}.{libvirt.getVersion() // 1000 % 1000}", flush=True)
    # As an installed copy starts: with its bytecode written (the first run writes it, even
    # where PYTHONDONTWRITEBYTECODE is set, as in some CI images).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cmd = [sys.executable, "-c", "import reconcile.cli, reconcile.host"]
    bare = [sys.executable, "-c", "import libvirt, yaml"]
    start = functools.partial(subprocess.run, env=env, cwd=REPO, check=True)
    imports = min(timed(start, cmd) for _ in range(4))
    floor_imports = min(timed(start, bare) for _ in range(4))
    print(f"  process start with imports: reconcile {imports:.2f}s, bare libvirt+yaml {floor_imports:.2f}s "
          "(not part of the figures below)", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="reconcile-bench-"))
    try:
        print("test:///default", flush=True)
        plan_bench(TEST_URI, [100, 1000] if args.quick else [100, 1000, 10000], tmp, args.repeat, "default-pool", None)
        if args.skip_real:
            return 0
        print("qemu:///system", flush=True)
        pool, pool_path = f"{PREFIX}pool", f"/var/lib/libvirt/images/{PREFIX}pool"
        try:
            plan_bench(SYSTEM_URI, [50] if args.quick else [50, 200], tmp, args.repeat, pool, pool_path)
            apply_bench([5] if args.quick else [5, 20], tmp, args.repeat, pool, pool_path)
        finally:
            conn = libvirt.open(SYSTEM_URI)
            cleanup(conn)
            conn.close()
            shutil.rmtree(pool_path, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
