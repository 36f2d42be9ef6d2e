"""Shared fixtures. Everything a test creates on a host carries the `rctest-` prefix, and is
removed after the test even when it fails; leftovers of a killed run are removed at start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

# Another prefix lets two checkouts run their suites against one daemon without touching
# each other's resources (each run removes leftovers of its own prefix only).
PREFIX = os.environ.get("RECONCILE_TEST_PREFIX", "rctest-")
SYSTEM_URI = "qemu:///system"
REPO = Path(__file__).resolve().parent.parent
POOL_ROOT = Path("/var/lib/libvirt/images") / PREFIX.rstrip("-")


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


DOMAIN_TYPE = "kvm" if kvm_usable() else "qemu"


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
            pool.undefine()
        except libvirt.libvirtError:
            pass


@pytest.fixture(scope="session")
def system_conn():
    """A connection to the real daemon. In CI it must be there; elsewhere its tests skip."""
    import libvirt

    try:
        conn = libvirt.open(SYSTEM_URI)
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
    yield Lab(name=name, pool=f"{name}-pool", pool_path=pool_path, specs=specs, conn=system_conn)
    cleanup_host(system_conn, prefix=name)
    shutil.rmtree(pool_path, ignore_errors=True)


class Lab:
    def __init__(self, name: str, pool: str, pool_path: Path, specs: Path, conn):
        self.name, self.pool, self.pool_path, self.specs, self.conn = name, pool, pool_path, specs, conn

    def dom(self, suffix: str) -> str:
        return f"{self.name}-{suffix}"

    def spec(self, filename: str, text: str) -> Path:
        return write(self.specs / filename, text)

    def cli(self, *args: str, check: int | None = None) -> subprocess.CompletedProcess:
        return run_cli(*args, str(self.specs), check=check)

    def domain_names(self) -> set[str]:
        return {d.name() for d in self.conn.listAllDomains(0) if d.name().startswith(self.name)}

    def volume_names(self) -> set[str]:
        pool = self.conn.storagePoolLookupByName(self.pool)
        pool.refresh(0)
        return {v.name() for v in pool.listAllVolumes(0)}
