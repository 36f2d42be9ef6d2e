"""What a nightly rebuild costs: `reconcile rebuild` of N running domains with an overlay
each, next to its floor and next to `destroy --force` + `apply` of the same specs.

    .venv/bin/python bench/rebuild.py [N] [ROUNDS]     # default 20 domains, 3 rounds

The floor is a bare libvirt-python script doing, one domain after another, what a rebuild
must: power off, delete the overlay, create it again on the base, start. The domains boot no
OS, so every stop is forced (`stop_timeout: 0`). Each round times the three, interleaved,
each once the domains have settled (a domain just started spins in its firmware for a
while, which would slow whatever runs beside it); the median of the rounds is printed. Resources are named with $RECONCILE_BENCH_PREFIX
(default `rcbench-`) and removed at the end. Prints figures; asserts nothing.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libvirt
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from run import PREFIX, cleanup, domain_type, quiet_cli, settle  # noqa: E402 - bench/run.py, beside this file

from reconcile.apply.executor import DEFAULT_PARALLEL  # noqa: E402

URI = "qemu:///system"
POOL = f"{PREFIX}rb-pool"


def write_spec(root: Path, n: int, base: Path, pool_path: Path) -> list[str]:
    names = [f"{PREFIX}rb{i:02d}" for i in range(n)]
    doc = {"project": f"{PREFIX}rebuild", "pools": [{"name": POOL, "path": str(pool_path)}],
           "images": [{"name": f"{PREFIX}base.qcow2", "pool": POOL, "source": str(base)}],
           "domains": [{"name": name, "type": domain_type(), "memory": "64MiB", "stop_timeout": 0,
                        "disks": [{"pool": POOL, "backing": f"{PREFIX}base.qcow2"}]} for name in names]}
    root.mkdir(parents=True, exist_ok=True)
    (root / "lab.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return names


def floor(conn: libvirt.virConnect, names: list[str]) -> None:
    """One domain after another: power off, delete the overlay, create it again, start."""
    pool = conn.storagePoolLookupByName(POOL)
    for name in names:
        dom = conn.lookupByName(name)
        if dom.isActive():
            dom.destroy()
        vol = pool.storageVolLookupByName(f"{name}-vda.qcow2")
        xml = vol.XMLDesc(0)
        vol.delete(0)
        pool.createXML(xml, 0)
        dom.create()


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = Path(tempfile.mkdtemp(prefix=PREFIX))
    pool_path = Path("/var/lib/libvirt/images") / POOL
    base = work / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1G"], check=True)
    spec_dir = work / "specs"
    names = write_spec(spec_dir, n, base, pool_path)
    conn = libvirt.open(URI)
    figures: dict[str, list[float]] = {"rebuild": [], "floor": [], "destroy+apply": []}
    try:
        cleanup(conn)
        quiet_cli("apply", "-q", "-c", URI, str(spec_dir))
        for r in range(rounds):
            for what in ("rebuild", "floor", "destroy+apply"):
                settle(names)  # freshly started domains spin in their firmware for a while: not beside a timing
                t0 = time.perf_counter()
                if what == "rebuild":
                    quiet_cli("rebuild", "-q", "-c", URI, str(spec_dir))
                elif what == "floor":
                    floor(conn, names)
                else:
                    quiet_cli("destroy", "--force", "-q", "-c", URI, str(spec_dir))
                    quiet_cli("apply", "-q", "-c", URI, str(spec_dir))
                figures[what].append(time.perf_counter() - t0)
            print(f"round {r + 1}: " + "   ".join(f"{k} {v[-1]:6.2f}s" for k, v in figures.items()), flush=True)
        med = {k: statistics.median(v) for k, v in figures.items()}
        print(f"{n} running domains, median of {rounds}: rebuild {med['rebuild']:.2f}s "
              f"(--parallel {DEFAULT_PARALLEL}), serial floor {med['floor']:.2f}s, "
              f"destroy --force + apply {med['destroy+apply']:.2f}s; rebuild/floor "
              f"{med['rebuild'] / med['floor']:.2f}x, rebuild/(destroy+apply) {med['rebuild'] / med['destroy+apply']:.2f}x")
    finally:
        cleanup(conn)
        conn.close()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(pool_path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
