"""What many hosts in one run cost: a cold `apply` of N domains spread over three hosts, next
to the same work on each host alone.

    .venv/bin/python bench/hosts.py [N] [ROUNDS] [STATES]   # default 24 domains, 3 rounds,
                                                            # running,stopped (as root)

The three hosts are real separate daemons on this machine: qemu:///system and the session
daemons of two local users over qemu+ssh (scripts/test-hosts, brought up here and taken
down at the end when this run brought it up). A third of the domains is on each, each with
a 1 MiB disk. Each round times the run over all three hosts and then each host alone
(`--host NAME`, the same specs), every apply cold (a `destroy --force` in between,
untimed), twice: with the domains started (booting nothing) and left stopped. Target: the
three-host run at most 1.25x the slowest host alone.

The three daemons share this machine's cores, unlike three real hosts: a started domain
spins in its firmware at full speed for a while, so started domains on three hosts are
three times the CPU work of one host's third, and that alone bounds the first ratio. The
stopped set (defines and volumes: reconcile's and libvirt's own work) shows what running
hosts side by side costs. Also printed: the sum of the single-host runs, what one host
after another would take. Resources are named with $RECONCILE_BENCH_PREFIX (default
`rcbench-`). Prints figures; asserts nothing.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from run import PREFIX, domain_type, quiet_cli  # noqa: E402 - bench/run.py, beside this file

REPO = Path(__file__).resolve().parent.parent
TEST_HOSTS = REPO / "scripts" / "test-hosts"
HOSTS = ("default", "s1", "s2")


def hosts_env() -> dict[str, str]:
    out = subprocess.run([str(TEST_HOSTS), "env"], check=True, capture_output=True, text=True).stdout
    return dict(shlex.split(line)[0].split("=", 1) for line in out.splitlines())


def write_spec(root: Path, n: int, env: dict[str, str], state: str) -> None:
    homes = [Path(pwd.getpwnam(env[f"RECONCILE_HOST{i}_USER"]).pw_dir) / f"{PREFIX}mh-pool" for i in (1, 2)]
    pools = [{"name": f"{PREFIX}mh-pool", "path": f"/var/lib/libvirt/images/{PREFIX}mh-pool"},
             {"name": f"{PREFIX}mh-pool", "path": str(homes[0]), "host": "s1"},
             {"name": f"{PREFIX}mh-pool", "path": str(homes[1]), "host": "s2"}]
    domains = []
    for i in range(n):
        host = HOSTS[i % 3]
        domains.append({"name": f"{PREFIX}mh{i:02d}", "type": domain_type(), "memory": "64MiB", "stop_timeout": 0,
                        "state": state,
                        **({"host": host} if host != "default" else {}),
                        "disks": [{"pool": f"{PREFIX}mh-pool", "size": "1MiB"}]})
    doc = {"project": f"{PREFIX}hosts", "hosts": {"s1": env["RECONCILE_HOST1_URI"], "s2": env["RECONCILE_HOST2_URI"]},
           "pools": pools, "domains": domains}
    root.mkdir(parents=True, exist_ok=True)
    (root / "lab.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 24
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    states = sys.argv[3].split(",") if len(sys.argv) > 3 else ["running", "stopped"]
    ours = subprocess.run(["id", "-u", "rchost1"], capture_output=True).returncode != 0
    subprocess.run([str(TEST_HOSTS), "up"], check=True, capture_output=True)
    work = Path(tempfile.mkdtemp(prefix=PREFIX))
    specs = work / "specs"
    env = hosts_env()
    try:
        for state in states:
            write_spec(specs, n, env, state)
            report(state, n, rounds, measure(specs, rounds))
    finally:
        quiet_cli("destroy", "-q", "--force", "-c", "qemu:///system", str(specs))
        shutil.rmtree(work, ignore_errors=True)
        if ours:
            subprocess.run([str(TEST_HOSTS), "down"], check=False, capture_output=True)
    return 0


def cpu_busy() -> tuple[float, float]:
    """Seconds of CPU this machine spent busy and in all, across its cores, so far."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / 100, sum(fields) / 100


def measure(specs: Path, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall seconds of each run, and the CPU seconds the whole machine was busy meanwhile."""
    figures: dict[str, list[float]] = {"three hosts": [], **{f"{h} alone": [] for h in HOSTS}}
    busy: dict[str, list[float]] = {k: [] for k in figures}
    quiet_cli("destroy", "-q", "--force", "-c", "qemu:///system", str(specs))
    quiet_cli("apply", "-q", "-c", "qemu:///system", str(specs))  # pools made, session daemons warm
    for _ in range(rounds):
        for what in figures:
            quiet_cli("destroy", "-q", "--force", "-c", "qemu:///system", str(specs))
            only = [] if what == "three hosts" else ["--host", what.split()[0]]
            t0, (b0, _) = time.perf_counter(), cpu_busy()
            quiet_cli("apply", "-q", "-c", "qemu:///system", *only, str(specs))
            figures[what].append(time.perf_counter() - t0)
            busy[what].append(cpu_busy()[0] - b0)
    return figures, busy


def report(state: str, n: int, rounds: int, measured) -> None:
    figures, busy = measured
    medians = {k: statistics.median(v) for k, v in figures.items()}
    cores = os.cpu_count() or 1
    slowest = max(medians[f"{h} alone"] for h in HOSTS)
    total = sum(medians[f"{h} alone"] for h in HOSTS)
    print(f"cold apply of {n} domains ({n // 3} per host), {state}, {rounds} rounds, medians:")
    for k, v in medians.items():
        cpu = statistics.median(busy[k])
        print(f"  {k:<14} {v:6.2f} s   machine CPU busy {cpu:5.2f} s ({100 * cpu / (v * cores):3.0f}% of "
              f"{cores} cores)   (rounds: {', '.join(f'{x:.2f}' for x in figures[k])})")
    print(f"  one host after another (sum): {total:.2f} s")
    print(f"  three hosts / slowest host alone: {medians['three hosts'] / slowest:.2f}x (target <= 1.25x); "
          f"three hosts / sum: {medians['three hosts'] / total:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
