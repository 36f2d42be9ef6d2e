"""The whole flow (load -> observe -> plan -> execute) on libvirt's in-process test driver.

Fast, no daemon: checks that what the executor does is what the next observation sees, so
a second plan is empty. libvirt's real defaults are only checked on the real daemon.
"""

from __future__ import annotations

import libvirt
import pytest

from reconcile import planner, specs
from reconcile.executor import execute
from reconcile.libvirt_host import LibvirtHost
from reconcile.model import ActionKind, Status

from .conftest import write

URI = "test:///default"


@pytest.fixture
def host():
    h = LibvirtHost(URI)
    yield h
    conn = libvirt.open(URI)
    for dom in conn.listAllDomains(0):
        if dom.name().startswith("td-"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    pool = conn.storagePoolLookupByName("default-pool")
    for vol in pool.listAllVolumes(0):
        if vol.name().startswith("td-"):
            vol.delete(0)
    h.close()


def converge(host, spec_dir, **kw):
    desired = specs.load([str(spec_dir)])
    observed = host.observe(pools={p for d in desired.domains for p in (x.pool for x in d.disks)},
                            volumes={(x.pool, x.volume) for d in desired.domains for x in d.disks})
    plan = planner.plan(desired, observed, **kw)
    return plan, execute(plan, host, parallel=4)


SPEC = """
    project: td
    domains:
      - name: td-web01
        type: kvm
        memory: 256MiB
        vcpus: 2
        boot: [hd]
        disks: [{pool: default-pool, size: 1GiB}]
        graphics: {type: vnc, listen: 127.0.0.1}
        autostart: true
      - name: td-idle
        memory: 128MiB
        state: stopped
    """


def test_apply_then_nothing_to_do(host, tmp_path):
    write(tmp_path / "a.yaml", SPEC)
    plan, result = converge(host, tmp_path)
    assert result.ok, result.results
    assert {(a.kind, a.name) for a in plan.actions} >= {(ActionKind.CREATE, "td-web01"), (ActionKind.START, "td-web01"),
                                                        (ActionKind.CREATE, "td-idle")}
    again, result = converge(host, tmp_path)
    assert again.empty, again.actions
    assert [n.message for n in again.notes if n.name == "td-web01"] == ["running and matches its spec"]
    assert [n.message for n in again.notes if n.name == "td-idle"] == ["stopped and matches its spec"]


def test_update_keeps_uuid(host, tmp_path):
    write(tmp_path / "a.yaml", SPEC)
    converge(host, tmp_path)
    uuid = libvirt.open(URI).lookupByName("td-web01").UUIDString()
    write(tmp_path / "a.yaml", SPEC.replace("memory: 256MiB", "memory: 512MiB"))
    plan, result = converge(host, tmp_path)
    assert [(a.kind, a.name) for a in plan.actions] == [(ActionKind.UPDATE, "td-web01")]
    assert {c.path for c in plan.actions[0].changes} == {"memory", "current_memory"}
    assert result.ok
    dom = libvirt.open(URI).lookupByName("td-web01")
    assert dom.UUIDString() == uuid
    assert "<memory unit='KiB'>524288</memory>" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def test_precondition_rechecked_when_already_done(host, tmp_path):
    """A plan applied twice (as after a crash): the second run finds everything done."""
    write(tmp_path / "a.yaml", SPEC)
    desired = specs.load([str(tmp_path)])
    observed = host.observe(pools={"default-pool"}, volumes={("default-pool", "td-web01-vda.qcow2")})
    plan = planner.plan(desired, observed)
    first = execute(plan, host)
    second = execute(plan, host)
    assert all(r.status is Status.APPLIED for r in first.results)
    assert all(r.status is Status.UNCHANGED for r in second.results), second.results


def test_absent_removes_domain_and_its_volumes(host, tmp_path):
    write(tmp_path / "a.yaml", SPEC)
    converge(host, tmp_path)
    write(tmp_path / "a.yaml", SPEC.replace("autostart: true", "autostart: true\n        state: absent"))
    plan, result = converge(host, tmp_path)
    assert result.ok, result.results
    conn = libvirt.open(URI)
    assert "td-web01" not in {d.name() for d in conn.listAllDomains(0)}
    assert "td-web01-vda.qcow2" not in {v.name() for v in conn.storagePoolLookupByName("default-pool").listAllVolumes(0)}


def test_failure_skips_dependents_and_others_finish(host, tmp_path):
    """A start that cannot happen (its volume's pool is gone) fails alone; the rest applies."""
    write(tmp_path / "a.yaml", SPEC)
    desired = specs.load([str(tmp_path)])
    observed = host.observe(pools={"default-pool"}, volumes=set())

    class Failing:
        def __getattr__(self, name):
            return getattr(host, name)

        def create_volume(self, *a):
            from reconcile.errors import Conflict
            raise Conflict("disk full", "create volume")

    result = execute(planner.plan(desired, observed), Failing())
    by = {(r.action.kind, r.action.name): r for r in result.results}
    assert by[(ActionKind.CREATE, "default-pool/td-web01-vda.qcow2")].status is Status.FAILED
    assert by[(ActionKind.START, "td-web01")].status is Status.SKIPPED
    assert "failed" in by[(ActionKind.START, "td-web01")].message
    assert by[(ActionKind.CREATE, "td-idle")].status is Status.APPLIED
    assert not result.ok


def test_console_reads_back_as_declared(host, tmp_path):
    """The serial console and its log file survive the round trip through libvirt's XML."""
    write(tmp_path / "a.yaml", """
        project: td
        domains:
          - name: td-console
            memory: 128MiB
            console: {log: /var/log/td-console.log}
        """)
    plan, result = converge(host, tmp_path)
    assert result.ok, result.results
    xml = libvirt.open(URI).lookupByName("td-console").XMLDesc(0)
    assert "<log file='/var/log/td-console.log' append='off'/>" in xml
    again, _ = converge(host, tmp_path)
    assert again.empty, again.actions


def test_a_plan_looks_only_at_its_own_domains(host, tmp_path):
    """On a shared host: the domains a project's plan sees are those its specs name and
    those it manages, not another project's or an unmanaged one (the test driver's own
    "test" domain is one)."""
    write(tmp_path / "a.yaml", SPEC)
    converge(host, tmp_path)
    write(tmp_path / "other" / "b.yaml", SPEC.replace("project: td", "project: td-other")
          .replace("td-web01", "td-else").replace("td-idle", "td-quiet"))
    converge(host, tmp_path / "other")
    names = lambda **kw: set(host.observe(pools={"default-pool"}, **kw).domains)  # noqa: E731
    everything = names()
    assert {"td-web01", "td-idle", "td-else", "td-quiet", "test"} <= everything
    assert names(project="td", live={"td-web01"}) == {"td-web01", "td-idle"}
    assert names(project="td", live={"test"}) == {"td-web01", "td-idle", "test"}  # named: unmanaged (exists)
    assert names(project="td-other", live=set()) == {"td-else", "td-quiet"}
