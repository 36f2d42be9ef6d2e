"""Ephemeral labs leave nothing behind, on the real daemon: `apply` then `destroy` of a lab
with its own pool and network gives back the host it found (domains, volumes, pools,
networks, and the pool's directory); a pool that holds another project's volume stays
until that volume is gone; a directory or a pool that was there before reconcile stays; and
a pool's creation or removal cut short is finished by the next run.

The daemon is shared with other test runs, whose resources come and go meanwhile: what is
compared is everything but those (named with another prefix than this run's).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from reconcile.codec import storage

from .conftest import DOMAIN_TYPE, POOL_ROOT, PREFIX, run_cli, write
from .test_roundtrip import isolated_network

pytestmark = pytest.mark.libvirtd


def _ours_or_nobodys(name: str) -> bool:
    """Not a resource of another test run (they are all named `rc…`, with another prefix)."""
    return name.startswith(PREFIX) or not name.startswith("rc")


def host_state(conn) -> dict[str, set]:
    """Every domain, pool, network and volume of the host, and what is in this run's pool root."""
    pools = [p for p in conn.listAllStoragePools(0) if _ours_or_nobodys(p.name())]
    volumes = set()
    for pool in pools:
        if pool.isActive():
            volumes |= {(pool.name(), v.name()) for v in pool.listAllVolumes(0)}
    return {
        "domains": {d.name() for d in conn.listAllDomains(0) if _ours_or_nobodys(d.name())},
        "pools": {(p.name(), p.isActive()) for p in pools},
        "networks": {(n.name(), n.isActive()) for n in conn.listAllNetworks(0) if _ours_or_nobodys(n.name())},
        "volumes": volumes,
        "pool root": set(p.name for p in POOL_ROOT.iterdir()) if POOL_ROOT.exists() else set(),
    }


def lab_spec(lab, net_spec: str, names: list[str]) -> None:
    """Its own isolated network, and domains with a 1 MiB disk in the lab's pool and a NIC on
    the network: they run with nothing to boot, and are powered off at once (stop_timeout 0)."""
    items = "".join(f"          - name: {n}\n"
                    f"            type: {DOMAIN_TYPE}\n"
                    "            memory: 64MiB\n"
                    "            stop_timeout: 0\n"
                    f"            disks: [{{pool: {lab.pool}, size: 1MiB}}]\n"
                    f"            interfaces: [{{network: {lab.name}-net}}]\n" for n in names)
    lab.spec("lab.yaml", f"""
        networks:
        {net_spec}
        domains:
""" + items)


def test_apply_then_destroy_leaves_the_host_as_it_was(lab):
    net, net_spec = isolated_network(lab)
    names = [lab.dom("e1"), lab.dom("e2")]
    lab_spec(lab, net_spec, names)
    before = host_state(lab.conn)
    assert not lab.pool_path.exists()

    lab.cli("apply", check=0)
    assert lab.domain_names() == set(names)
    assert all(lab.conn.lookupByName(n).isActive() for n in names)
    record = storage.pool_owner(lab.conn.storagePoolLookupByName(lab.pool).XMLDesc(0))
    assert record is not None and record.project == lab.name and record.made_directory, record
    assert lab.pool_path.is_dir()

    doc = json.loads(lab.cli("destroy", "-o", "json", check=0).stdout)
    results = {(r["resource"], r["name"]): r for r in doc["results"]}
    assert results[("pool", lab.pool)]["status"] == results[("network", net)]["status"] == "applied", doc["results"]
    assert results[("pool", lab.pool)]["message"] == "with its directory"
    # the pool and network go last, after every domain and volume removal of the run
    last = max(r["finished"] for r in doc["results"] if r["resource"] in ("domain", "volume"))
    assert min(results[("pool", lab.pool)]["started"], results[("network", net)]["started"]) >= last
    assert {a["resource"] for a in doc["actions"][-2:]} == {"pool", "network"}
    assert host_state(lab.conn) == before
    assert not lab.pool_path.exists()
    assert "No changes." in lab.cli("destroy", check=0).stdout


def test_a_pool_holding_another_projects_volume_stays_until_it_is_empty(lab, tmp_path):
    mine, theirs = lab.dom("m1"), lab.dom("t1")
    lab.spec("mine.yaml", f"""
        domains:
          - {{name: {mine}, type: {DOMAIN_TYPE}, memory: 64MiB, state: stopped, stop_timeout: 0,
             disks: [{{pool: {lab.pool}, size: 1MiB}}], interfaces: []}}
        """)
    other = write(tmp_path / "other" / "lab.yaml", f"""
        project: {lab.name}-other
        domains:
          - {{name: {theirs}, type: {DOMAIN_TYPE}, memory: 64MiB, state: stopped, stop_timeout: 0,
             disks: [{{pool: {lab.pool}, size: 1MiB}}], interfaces: []}}
        """)
    lab.cli("apply", check=0)
    run_cli("apply", str(other), check=0)

    out = lab.cli("destroy", check=0)
    assert f"= pool {lab.pool}: kept: it still holds volume {theirs}-vda.qcow2" in out.stdout, out.stdout
    assert lab.domain_names() == {theirs}
    assert lab.volume_names() == {f"{theirs}-vda.qcow2"}
    assert lab.pool_path.is_dir()

    # The other project never removes a pool it did not make; once it is empty, ours goes.
    run_cli("destroy", str(other), check=0)
    assert lab.pool_exists() and lab.volume_names() == set()
    out = lab.cli("destroy", check=0)
    assert f"- destroy pool {lab.pool}" in out.stdout, out.stdout
    assert not lab.pool_exists() and not lab.pool_path.exists()


def test_a_pool_over_a_directory_that_was_there_keeps_the_directory(lab):
    """A directory reconcile did not make is never removed: the pool goes, the directory
    (even empty) stays."""
    lab.pool_path.mkdir(parents=True)
    lab.cli("apply", check=0)
    record = storage.pool_owner(lab.conn.storagePoolLookupByName(lab.pool).XMLDesc(0))
    assert record is not None and not record.made_directory, record
    out = lab.cli("destroy", check=0)
    assert "stays (it was there before the pool)" in out.stdout, out.stdout
    assert not lab.pool_exists() and lab.pool_path.is_dir()


def test_a_pool_that_existed_before_reconcile_stays(lab):
    """A pool without reconcile's record (defined by hand) is used, and stays on destroy."""
    lab.pool_path.mkdir(parents=True)
    pool = lab.conn.storagePoolDefineXML(storage.pool_xml(lab.pool, str(lab.pool_path)), 0)
    pool.create(0)
    lab.cli("apply", check=0)
    assert storage.pool_owner(pool.XMLDesc(0)) is None
    out = lab.cli("destroy", check=0)
    assert f"= pool {lab.pool}: kept: reconcile did not create it" in out.stdout, out.stdout
    assert lab.pool_exists() and Path(lab.pool_path).is_dir()
    assert ET.fromstring(pool.XMLDesc(0)).findtext("target/path") == str(lab.pool_path) and pool.isActive()


def test_a_pool_creation_or_removal_cut_short_is_finished(lab):
    """The states a run killed inside a pool's creation or removal leaves, each finished by
    the next run: defined with the record (directory not yet made), then stopped with its
    directory, then stopped with its directory already removed."""
    from reconcile.model import PoolOwner

    spec_file = str(lab.specs / "pool.yaml")
    lab.conn.storagePoolDefineXML(storage.pool_xml(lab.pool, str(lab.pool_path), PoolOwner(lab.name, spec_file)), 0)
    lab.cli("apply", check=0)
    pool = lab.conn.storagePoolLookupByName(lab.pool)
    assert pool.isActive() and storage.pool_owner(pool.XMLDesc(0)) == PoolOwner(lab.name, spec_file, True)

    pool.destroy()  # killed after the stop: its directory is still there
    out = lab.cli("destroy", check=0)
    assert "not active: what it holds is checked when it is removed" in out.stdout, out.stdout
    assert not lab.pool_exists() and not lab.pool_path.exists()

    lab.cli("apply", check=0)
    pool = lab.conn.storagePoolLookupByName(lab.pool)
    pool.destroy()
    pool.delete(0)  # killed after the directory went
    lab.cli("destroy", check=0)
    assert not lab.pool_exists() and not lab.pool_path.exists()
