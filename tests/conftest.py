"""Shared fixtures. Everything a test creates on a host carries the `rctest-` prefix, and is
removed after the test even when it fails; leftovers of a killed run are removed at start."""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from . import daemon_watch

# Another prefix lets two checkouts run their suites against one daemon without touching
# each other's resources (each run removes leftovers of its own prefix only).
PREFIX = os.environ.get("RECONCILE_TEST_PREFIX", "rctest-")
SYSTEM_URI = "qemu:///system"
REPO = Path(__file__).resolve().parent.parent
POOL_ROOT = Path("/var/lib/libvirt/images") / PREFIX.rstrip("-")
GUEST_BUILD = REPO / "tests" / "guest" / "build"
TEST_HOSTS = REPO / "scripts" / "test-hosts"


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


# RECONCILE_TEST_DOMAIN_TYPE=qemu runs the suite as on a machine without /dev/kvm.
DOMAIN_TYPE = os.environ.get("RECONCILE_TEST_DOMAIN_TYPE") or ("kvm" if kvm_usable() else "qemu")


def run_cli(*args: str, uri: str = SYSTEM_URI, check: int | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real command line, as a user would, and return what it printed."""
    full_env = dict(os.environ, LIBVIRT_DEFAULT_URI=uri, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "reconcile", *args], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=600)
    if check is not None and proc.returncode != check:
        raise AssertionError(f"exit {proc.returncode}, expected {check}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def cleanup_host(conn, prefix: str = PREFIX) -> None:
    """Remove every domain, volume, pool and network whose name starts with `prefix`."""
    import libvirt

    for dom in conn.listAllDomains(0):
        if not dom.name().startswith(prefix):
            continue
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                              | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        except libvirt.libvirtError:
            pass
    for net in conn.listAllNetworks(0):
        if net.name().startswith(prefix):
            try:
                if net.isActive():
                    net.destroy()
                net.undefine()
            except libvirt.libvirtError:
                pass
    for pool in conn.listAllStoragePools(0):
        if not pool.name().startswith(prefix):
            continue
        try:
            if not pool.isActive():
                pool.create(0)
            pool.refresh(0)
            for vol in pool.listAllVolumes(0):
                vol.delete(0)
            pool.destroy()
        except libvirt.libvirtError:
            pass  # e.g. a pool whose directory cannot be made: it never started
        try:
            pool.undefine()
        except libvirt.libvirtError:
            pass


_CONNECTIONS: list[DaemonConnection] = []


class DaemonConnection:
    """The suite's connection to qemu:///system, opened again when libvirtd had to be
    started again (see `_libvirtd_watch`); otherwise a libvirt connection as any other."""

    def __init__(self, uri: str):
        import libvirt

        self._uri = uri
        self._conn = libvirt.open(uri)
        _CONNECTIONS.append(self)

    def reopen(self) -> None:
        import libvirt

        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()
        self._conn = libvirt.open(self._uri)

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


class _Watch:
    """What tests/daemon_watch.py has seen: libvirtd's PID, and how many failures were told."""
    config = None
    told = 0


def pytest_configure(config):
    _Watch.config = config


def _say(text: str) -> None:
    """Straight to the terminal (CI's log), even from inside a test's captured output."""
    if _Watch.config is None:
        return
    plugins = _Watch.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.ensure_newline()
        reporter.write_line(text)


def pytest_sessionstart(session):
    if os.geteuid() == 0 and daemon_watch.daemon_pid() is not None:
        free = shutil.disk_usage("/var/lib/libvirt").free / 2**30
        _say(f"real daemon: libvirtd pid {daemon_watch.daemon_pid()}; domains of type {DOMAIN_TYPE}; "
             f"{free:.1f} GiB free under /var/lib/libvirt")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.failed_call = report.failed


def pytest_runtest_logreport(report):
    """A failure is told when it happens, not only when the run ends (which a run that hangs
    never reaches): one line each, and in CI the whole of the first few."""
    if not report.failed:
        return
    crash = getattr(report.longrepr, "reprcrash", None)
    first = (crash.message if crash else str(report.longrepr)).strip().splitlines()
    _say(f"FAILED ({report.when}) {report.nodeid}: {first[0] if first else ''}"[:400])
    if os.environ.get("CI") and _Watch.told < 3:
        _Watch.told += 1
        _say("\n".join(report.longreprtext.splitlines()[-60:]))


@pytest.fixture(autouse=True)
def _libvirtd_watch(request):
    """libvirtd looked at before and after each test on the real daemon (tests/daemon_watch.py)."""
    if request.node.get_closest_marker("libvirtd") is None or os.geteuid() != 0:
        yield
        return
    before = daemon_watch.daemon_pid()
    yield
    after = daemon_watch.daemon_pid()
    if before is not None and after != before:
        said = f"libvirtd (pid {before}) ended during this test.\n{daemon_watch.diagnosis()}"
        why = daemon_watch.restart()
        for conn in _CONNECTIONS:
            with contextlib.suppress(Exception):
                conn.reopen()
        _say(said + ("\nlibvirtd is started again for the tests that follow" if why is None
                     else f"\nlibvirtd could not be started again: {why}"))
        if why is not None:
            pytest.exit("libvirtd is gone and could not be started again", returncode=1)
        pytest.fail(said, pytrace=False)
    if before is not None and getattr(request.node, "failed_call", False) and (silent := daemon_watch.answers()):
        said = f"libvirtd (pid {before}) does not answer after this test failed: {silent}\n{daemon_watch.diagnosis()}"
        _say(said)
        pytest.exit(said, returncode=1)


@pytest.fixture(scope="session")
def system_conn():
    """A connection to the real daemon. In CI it must be there; elsewhere its tests skip."""
    import libvirt

    try:
        conn = DaemonConnection(SYSTEM_URI)
    except libvirt.libvirtError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"qemu:///system is not reachable in CI: {exc}")
        pytest.skip(f"qemu:///system is not reachable: {exc}")
    cleanup_host(conn)
    shutil.rmtree(POOL_ROOT, ignore_errors=True)
    yield conn
    cleanup_host(conn)
    shutil.rmtree(POOL_ROOT, ignore_errors=True)
    conn.close()


def cleanup_uri(uri: str, prefix: str = PREFIX) -> None:
    """cleanup_host on a connection of its own to `uri` (e.g. one of `remote_hosts.uris`)."""
    import libvirt

    conn = libvirt.open(uri)
    try:
        cleanup_host(conn, prefix=prefix)
    finally:
        conn.close()


class RemoteHosts:
    """The session daemons of two local users, which root reaches over qemu+ssh through an sshd
    on 127.0.0.1 (scripts/test-hosts): two hosts besides qemu:///system, each a daemon of its
    own. Session daemons have no networks of their own; pools go under the user's home."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.users = (env["RECONCILE_HOST1_USER"], env["RECONCILE_HOST2_USER"])
        self.uris = (env["RECONCILE_HOST1_URI"], env["RECONCILE_HOST2_URI"])
        self.key = env["RECONCILE_HOSTS_KEY"]
        self.port = int(env["RECONCILE_HOSTS_PORT"])

    def home(self, user: str) -> Path:
        """Where that user's pools can go: its session daemon may write there."""
        return Path(pwd.getpwnam(user).pw_dir)


def run_test_hosts(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run scripts/test-hosts; a run that fails or takes too long fails the caller."""
    try:
        proc = subprocess.run([str(TEST_HOSTS), *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scripts/test-hosts {' '.join(args)} did not end within {timeout:.0f}s:\n{exc.stderr or ''}")
    if proc.returncode != 0:
        pytest.fail(f"scripts/test-hosts {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def read_env(text: str) -> dict[str, str]:
    """The KEY='VALUE' lines of `scripts/test-hosts env`, read as a shell reads them."""
    env = {}
    for line in text.splitlines():
        (item,) = shlex.split(line)
        key, _, value = item.partition("=")
        env[key] = value
    return env


@pytest.fixture(scope="session")
def remote_hosts():
    """Two more hosts for multi-host tests, made at the start of the session and removed at its
    end (users, sshd, keys), whatever the outcome. Two sessions using them at once would remove
    them under each other. Skips only where it cannot run at all: not as root."""
    if os.geteuid() != 0:
        pytest.skip("the remote test hosts need root: scripts/test-hosts creates users and runs an sshd")
    try:
        run_test_hosts("up")
        hosts = RemoteHosts(read_env(run_test_hosts("env").stdout))
        for uri in hosts.uris:
            cleanup_uri(uri)  # left by a run killed before its `down`
        yield hosts
    finally:
        run_test_hosts("down")


@pytest.fixture
def lab(system_conn, tmp_path):
    """A fresh spec directory and a private pool for one test on the real daemon."""
    tag = uuid.uuid4().hex[:6]
    name = f"{PREFIX}{tag}"
    pool_path = POOL_ROOT / tag
    specs = tmp_path / "specs"
    specs.mkdir()
    write(specs / "pool.yaml", f"""
        project: {name}
        pools:
          - name: {name}-pool
            path: {pool_path}
        """)
    log_dir = POOL_ROOT / f"{tag}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    yield Lab(name=name, pool=f"{name}-pool", pool_path=pool_path, specs=specs, conn=system_conn, log_dir=log_dir)
    cleanup_host(system_conn, prefix=name)
    shutil.rmtree(pool_path, ignore_errors=True)
    shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def guest_images() -> dict[str, Path]:
    """The bootable test guest (tests/guest/build), built once and cached between runs.

    `acpi`: powers off on the ACPI power button; `acpi-ignore`: ignores it.
    """
    proc = subprocess.run([sys.executable, str(GUEST_BUILD)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"building the test guest failed:\n{proc.stderr}")
    paths = [Path(line) for line in proc.stdout.splitlines()]
    return {"acpi": paths[0], "acpi-ignore": paths[1]}


def wait_for_console(log: Path, text: str, timeout: float = 240.0) -> str:
    """Wait until the console log holds `text`; return the log.

    Generous by default: guests boot by emulation on a machine that others share.
    """
    deadline = time.monotonic() + timeout
    content = ""
    while time.monotonic() < deadline:
        try:
            content = log.read_text(errors="replace")
        except FileNotFoundError:
            content = ""
        if text in content:
            return content
        time.sleep(0.5)
    raise AssertionError(f"{text!r} did not appear on the console within {timeout:.0f}s; {log} holds:\n{content}")


class Lab:
    def __init__(self, name: str, pool: str, pool_path: Path, specs: Path, conn, log_dir: Path):
        self.name, self.pool, self.pool_path, self.specs, self.conn = name, pool, pool_path, specs, conn
        self.log_dir = log_dir

    def console_log(self, suffix: str) -> Path:
        """Where the console of domain `dom(suffix)` is logged (outside the pool directory)."""
        return self.log_dir / f"{self.dom(suffix)}.log"

    def dom(self, suffix: str) -> str:
        return f"{self.name}-{suffix}"

    def spec(self, filename: str, text: str) -> Path:
        return write(self.specs / filename, text)

    def cli(self, *args: str, check: int | None = None) -> subprocess.CompletedProcess:
        return run_cli(*args, str(self.specs), check=check)

    def domain_names(self) -> set[str]:
        return {d.name() for d in self.conn.listAllDomains(0) if d.name().startswith(self.name)}

    def pool_exists(self) -> bool:
        return self.pool in {p.name() for p in self.conn.listAllStoragePools(0)}

    def volume_names(self) -> set[str]:
        """The volumes of the lab's pool; none once the pool is gone (a destroy removes the
        pool reconcile made for the lab when it is left empty)."""
        if not self.pool_exists():
            return set()
        pool = self.conn.storagePoolLookupByName(self.pool)
        pool.refresh(0)
        return {v.name() for v in pool.listAllVolumes(0)}
