"""When the real daemon goes away in the middle of the suite: say so at once, in the words
CI's log keeps, and carry on with a new one.

A libvirtd that ends during one test fails every later test for that one reason, and
pytest prints the reasons only when the run ends, which a run that then hangs never does.
So each test on the real daemon looks at libvirtd before and after it. Gone: the test that
saw it go is named with the tail of libvirtd's log, the kernel's last lines, the free disk
space and memory, and libvirtd is started again by scripts/bootstrap, so that the tests
after it measure reconcile and not the loss. Running but silent: the same words, and the
run stops (a daemon some other tool started is not ours to end).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PIDFILE = Path("/run/libvirtd.pid")
LOG = Path("/var/log/libvirt/libvirtd.log")  # where scripts/bootstrap's libvirtd writes
REPO = Path(__file__).resolve().parent.parent


def daemon_pid() -> int | None:
    """The running system libvirtd's PID, or None."""
    try:
        pid = int(PIDFILE.read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # "PID (comm) STATE ...": a killed daemon nobody reaped (a container's first process
    # may not) is a zombie, still listed under its name
    name, _, rest = stat.partition(") ")
    return pid if name.endswith("(libvirtd") and not rest.startswith(("Z", "X")) else None


def answers(timeout: float = 30) -> str | None:
    """None when qemu:///system answers within `timeout`; else what went wrong."""
    try:
        proc = subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout:.0f}s"
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"virsh exit {proc.returncode}")


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({path}: {exc.strerror})"


def _run(*argv: str) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({argv[0]}: {exc})"
    return (proc.stdout + proc.stderr).strip()


def diagnosis() -> str:
    """What the machine says about a daemon that went away."""
    mem = {k: v for k, v in (line.split(":", 1) for line in _tail(Path("/proc/meminfo"), 100).splitlines()
                             if ":" in line)}
    parts = [
        f"libvirtd's log ({LOG}), its last lines:\n{_tail(LOG, 25)}",
        f"the kernel's last lines:\n{_run('dmesg', '--ctime')[-2000:]}",
        f"free disk space:\n{_run('df', '-h', '/var/lib/libvirt', '/var/run', '/tmp')}",
        f"memory: {mem.get('MemAvailable', '?').strip()} available of {mem.get('MemTotal', '?').strip()}",
    ]
    return "\n".join(parts)


def restart() -> str | None:
    """Start libvirtd again as scripts/bootstrap does; None once it answers, else why not."""
    if shutil.which("libvirtd") is None:
        return "no libvirtd on this machine"
    proc = subprocess.run([str(REPO / "scripts" / "bootstrap")], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return f"scripts/bootstrap failed:\n{proc.stdout}{proc.stderr}"
    return answers()
