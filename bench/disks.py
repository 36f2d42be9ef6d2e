"""What disks cost: image import throughput, seed building, and a plan that reads seeds back.

Run as root on a host with qemu:///system: `.venv/bin/python bench/disks.py [N]`. Every
resource is named with $RECONCILE_BENCH_PREFIX (default `rcbench-`) and removed at the end.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconcile import plan as planner  # noqa: E402
from reconcile.codec import seed  # noqa: E402
from reconcile import spec as specs  # noqa: E402
from reconcile.apply.executor import execute  # noqa: E402
from reconcile.host import LibvirtHost  # noqa: E402
from reconcile.model import Status  # noqa: E402
from run import PREFIX, cleanup  # noqa: E402 - bench/run.py, beside this file

URI = "qemu:///system"


def observe_and_plan(host: LibvirtHost, spec_dir: Path):
    desired = specs.load([str(spec_dir)])
    observed = host.observe(pools=desired.pools_of_interest(), volumes=desired.volumes_of_interest(),
                            seeds=desired.seeds_of_interest(), heads=desired.heads_of_interest())
    return planner.plan(desired, observed)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    work = Path(tempfile.mkdtemp(prefix=PREFIX))
    pool_path = Path("/var/lib/libvirt/images") / f"{PREFIX}pool"
    image = work / "base.qcow2"
    # A base image with 256 MiB of data, so the import moves real bytes.
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1G"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 256M", str(image)], check=True, capture_output=True)
    lines = [f"project: {PREFIX}bench",
             f"pools: [{{name: {PREFIX}pool, path: {pool_path}}}]",
             f"images: [{{name: {PREFIX}base.qcow2, pool: {PREFIX}pool, source: {image}}}]",
             "domains:"]
    for i in range(n):
        lines += [f"  - name: {PREFIX}vm{i:03d}", "    memory: 64MiB", "    state: stopped",
                  f"    disks: [{{pool: {PREFIX}pool, backing: {PREFIX}base.qcow2, size: 2GiB}}]",
                  f"    cloud_init: {{user_data: {{hostname: vm{i:03d}, packages: [nginx, curl]}}}}"]
    spec_dir = work / "specs"
    spec_dir.mkdir()
    (spec_dir / "bench.yaml").write_text("\n".join(lines) + "\n")

    host = LibvirtHost(URI)
    try:
        files = specs.load([str(spec_dir)]).domains[0].seed.files
        t0 = time.perf_counter()
        for _ in range(20):
            iso = seed.build_iso(files)
        build = (time.perf_counter() - t0) / 20
        t0 = time.perf_counter()
        for _ in range(20):
            seed.read_iso(iso)
        read = (time.perf_counter() - t0) / 20
        print(f"seed ISO: {len(iso) // 1024} KiB, built in {build * 1000:.1f} ms, read back in {read * 1000:.1f} ms")

        first = observe_and_plan(host, spec_dir)
        result = execute(first, host, parallel=4)
        imp = next(r for r in result.results if r.action.resource.value == "image")
        size = image.stat().st_size
        print(f"import of a {size / 2**20:.0f} MiB image: {imp.duration:.2f} s ({size / 2**20 / max(imp.duration, 1e-9):.0f} MiB/s)")
        print(f"first apply of {n} domains (overlay + seed each): {result.wall_time:.2f} s, "
              f"{result.count(Status.APPLIED)} actions applied")

        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            again = observe_and_plan(host, spec_dir)
            times.append(time.perf_counter() - t0)
            assert again.empty, [a.id for a in again.actions]
        print(f"converged plan of {n} domains with seeds (observe reads every seed back): "
              f"best {min(times) * 1000:.0f} ms of 3")
    finally:
        conn = libvirt.open(URI)
        cleanup(conn)
        conn.close()
        host.close()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(pool_path, ignore_errors=True)


if __name__ == "__main__":
    main()
