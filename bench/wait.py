"""How long `apply --wait` takes next to the guests' own boot-and-lease time (the floor).

Run as root on a host with qemu:///system, after tests/guest/build:
`.venv/bin/python bench/wait.py [N] [ROUNDS]` (default 3 guests, 3 rounds). Each round
applies N test guests on an isolated DHCP network with `apply --wait`, while this script
reads their console logs every 20 ms for the line each guest prints once its DHCP client
has its address. The floor of a round is the moment the last guest printed it, from the
start of the command; the overhead is what `apply --wait` took beyond that (the wait
noticing the leases, its polling interval, the process ending). Between rounds everything
is destroyed. Resources are named with $RECONCILE_BENCH_PREFIX (default `rcbench-`) and
removed at the end. Prints figures; asserts nothing.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from run import PREFIX, cleanup  # noqa: E402 - bench/run.py, beside this file

URI = "qemu:///system"
REPO = Path(__file__).resolve().parent.parent
LEASED = "rcguest: address: eth0 "


def spec(n: int, image: Path, pool_path: Path, logs: Path) -> str:
    lines = [f"project: {PREFIX}wait",
             f"pools: [{{name: {PREFIX}pool, path: {pool_path}}}]",
             f"networks: [{{name: {PREFIX}net, ip: 192.168.246.1, netmask: 255.255.255.0, "
             "dhcp: {start: 192.168.246.100, end: 192.168.246.200}}]",
             f"images: [{{name: {PREFIX}guest.img, pool: {PREFIX}pool, source: {image}, format: raw}}]",
             "domains:"]
    for i in range(n):
        lines += [f"  - name: {PREFIX}vm{i}", "    type: qemu", "    memory: 128MiB",
                  f"    disks: [{{pool: {PREFIX}pool, backing: {PREFIX}guest.img}}]",
                  f"    interfaces: [{{network: {PREFIX}net}}]",
                  f"    console: {{log: {logs / f'vm{i}.log'}}}"]
    return "\n".join(lines) + "\n"


def reconcile(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "reconcile", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def one_round(spec_dir: Path, logs: Path, n: int) -> tuple[float, float]:
    for log in logs.glob("*.log"):
        log.unlink()
    t0 = time.monotonic()
    proc = reconcile("apply", "--wait", "-o", "json", str(spec_dir))
    leased: dict[int, float] = {}
    while proc.poll() is None or len(leased) < n:
        for i in range(n):
            if i not in leased:
                try:
                    if LEASED in (logs / f"vm{i}.log").read_text(errors="replace"):
                        leased[i] = time.monotonic() - t0
                except FileNotFoundError:
                    pass
        if proc.poll() is not None and time.monotonic() - t0 > 600:
            break
        time.sleep(0.02)
    total = time.monotonic() - t0
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"apply --wait failed ({proc.returncode}):\n{out}\n{err}")
    return total, max(leased.values())


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    build = subprocess.run([sys.executable, str(REPO / "tests" / "guest" / "build")], capture_output=True, text=True,
                           check=True)
    image = Path(build.stdout.split()[0])
    work = Path(tempfile.mkdtemp(prefix=PREFIX))
    pool_path = Path("/var/lib/libvirt/images") / f"{PREFIX}pool"
    logs = Path("/var/lib/libvirt/images") / f"{PREFIX}logs"
    logs.mkdir(parents=True, exist_ok=True)
    spec_dir = work / "specs"
    spec_dir.mkdir()
    (spec_dir / "lab.yaml").write_text(spec(n, image, pool_path, logs))
    conn = libvirt.open(URI)
    totals, floors, overheads = [], [], []
    try:
        cleanup(conn)
        for r in range(rounds):
            total, floor = one_round(spec_dir, logs, n)
            totals.append(total)
            floors.append(floor)
            overheads.append(total - floor)
            print(f"round {r + 1}: apply --wait {total:6.2f}s   last lease on a console {floor:6.2f}s   "
                  f"beyond it {total - floor:5.2f}s", flush=True)
            subprocess.run([sys.executable, "-m", "reconcile", "destroy", "-q", str(spec_dir)], cwd=REPO,
                           check=True, capture_output=True)
        print(f"{n} guests, median of {rounds}: apply --wait {statistics.median(totals):.2f}s, "
              f"floor (last guest leased, from the command's start) {statistics.median(floors):.2f}s, "
              f"beyond the floor {statistics.median(overheads):.2f}s")
    finally:
        cleanup(conn)
        conn.close()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(pool_path, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
