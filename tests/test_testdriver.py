"""The whole flow (load -> observe -> plan -> execute) on libvirt's in-process test driver.

Fast, no daemon: checks that what the executor does is what the next observation sees, so
a second plan is empty. libvirt's real defaults are only checked on the real daemon.
"""

from __future__ import annotations

import errno
import json

import jsonschema
import libvirt
import pytest

from reconcile.apply import executor
from reconcile import plan as planner
from reconcile.cli import render
from reconcile import spec as specs
from reconcile.apply.executor import execute
from reconcile.host import LibvirtHost, translate
from reconcile.errors import Conflict
from reconcile.model import ActionKind, Status

from .conftest import REPO, write

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


class Failing:
    """The host, except that its `method` raises `exc` the first `times` times."""

    def __init__(self, host, method: str, exc: Exception, times: int):
        self.host, self.method, self.exc, self.left = host, method, exc, times

    def __getattr__(self, name):
        call = getattr(self.host, name)
        if name != self.method:
            return call

        def failing(*args, **kwargs):
            if self.left:
                self.left -= 1
                raise self.exc
            return call(*args, **kwargs)
        return failing


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
    assert {c.shown for c in plan.actions[0].changes} == {"memory", "current_memory"}
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

    failing = Failing(host, "create_volume", Conflict("disk full", "create volume"), times=1)
    result = execute(planner.plan(desired, observed), failing)
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


def system_error(number: int, message: str) -> libvirt.libvirtError:
    """What libvirtd sends when one of its system calls fails: the errno travels as int1."""
    exc = libvirt.libvirtError(message)
    exc.err = (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_CGROUP, message, libvirt.VIR_ERR_ERROR,
               None, None, None, number, 0)
    return exc


EAGAIN_BPF = "failed to load cgroup BPF prog: Resource temporarily unavailable"
START = "start domain td-web01"


def plan_for(host, tmp_path):
    write(tmp_path / "a.yaml", SPEC)
    desired = specs.load([str(tmp_path)])
    return planner.plan(desired, host.observe(pools={"default-pool"}, volumes=set()))


def test_a_temporary_failure_is_tried_again(host, tmp_path, monkeypatch):
    """libvirtd answering EAGAIN (seen when starting a domain while others were torn down)
    is not the end of the action: it is tried again and the result says so."""
    monkeypatch.setattr(executor, "RETRY_PAUSES", (0.01, 0.01))
    flaky = Failing(host, "start_domain", translate(system_error(errno.EAGAIN, EAGAIN_BPF), START), times=2)
    result = execute(plan_for(host, tmp_path), flaky)
    start = next(r for r in result.results if (r.action.kind, r.action.name) == (ActionKind.START, "td-web01"))
    assert start.status is Status.APPLIED, start
    assert start.attempts == 3
    assert "after 2 temporary failures" in start.message and EAGAIN_BPF in start.message
    assert result.ok and not result.connection_lost
    assert libvirt.open(URI).lookupByName("td-web01").isActive()
    doc = render.apply_json(result)
    jsonschema.validate(doc, json.loads((REPO / "schemas" / "plan.schema.json").read_text()))
    assert [r["attempts"] for r in doc["results"] if "attempts" in r] == [3]


def test_a_failure_that_stays_temporary_fails_alone(host, tmp_path, monkeypatch):
    monkeypatch.setattr(executor, "RETRY_PAUSES", (0.01, 0.01))
    flaky = Failing(host, "start_domain", translate(system_error(errno.EAGAIN, EAGAIN_BPF), START), times=10)
    result = execute(plan_for(host, tmp_path), flaky)
    by = {(r.action.kind, r.action.name): r for r in result.results}
    start = by[(ActionKind.START, "td-web01")]
    assert start.status is Status.FAILED and start.attempts == 3
    assert start.message == f"{START}: {EAGAIN_BPF} (tried 3 times; the host called it temporary)"
    assert flaky.left == 7
    assert by[(ActionKind.CREATE, "td-idle")].status is Status.APPLIED
    assert not result.connection_lost


@pytest.mark.parametrize("number, kind", [(errno.ENOSPC, "host error"), (errno.EACCES, "permission denied")])
def test_a_system_error_on_the_host_is_not_a_lost_connection(host, tmp_path, number, kind):
    """A failed system call in libvirtd fails its action once, and the rest of the apply
    goes on: before, any system error counted as a lost connection and skipped the rest."""
    flaky = Failing(host, "start_domain", translate(system_error(number, "cannot: " + errno.errorcode[number]), START),
                     times=1)
    result = execute(plan_for(host, tmp_path), flaky, parallel=1)
    by = {(r.action.kind, r.action.name): r for r in result.results}
    start = by[(ActionKind.START, "td-web01")]
    assert (start.status, start.error, start.attempts) == (Status.FAILED, kind, 1)
    assert not result.connection_lost
    assert all(r.status is Status.APPLIED for r in result.results if r is not start), result.results


def test_a_broken_connection_skips_what_was_not_attempted(host, tmp_path):
    exc = libvirt.libvirtError("Cannot recv data: Connection reset by peer")
    exc.err = (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, str(exc), libvirt.VIR_ERR_ERROR,
               None, None, None, errno.ECONNRESET, 0)
    broken = Failing(host, "define_domain", translate(exc, "define domain td-idle"), times=1)
    result = execute(plan_for(host, tmp_path), broken, parallel=1)
    first, *rest = result.results  # the plan's first action, and so the first one run
    assert (first.action.kind, first.status) == (ActionKind.CREATE, Status.FAILED)
    assert "lost the connection to libvirtd" in first.message and first.error == "host unavailable"
    assert result.connection_lost
    assert rest and all(r.status is Status.SKIPPED for r in rest), rest
    assert any(r.message == "not attempted: the connection to the host was lost" for r in rest)


TEARDOWN = """
    project: td
    pools: [{name: td-pool, path: /nowhere/td-pool}]
    networks: [{name: td-net}]
    domains:
      - name: td-tear
        memory: 128MiB
        state: stopped
        disks: [{pool: td-pool, size: 16MiB}]
        interfaces: [{network: td-net}]
    """


def test_destroy_removes_the_pool_and_network_it_made_and_their_records_say_so(host, tmp_path):
    """The pool carries the record in its definition (libvirt keeps a dir pool's
    <source><vendor/><product/>), observe reads it back, and destroy removes the pool and the
    network after the domain and its volume; `default-pool`, which reconcile did not make,
    and anything of another project stay."""
    from types import SimpleNamespace

    from reconcile.cli.main import observe_for

    write(tmp_path / "a.yaml", TEARDOWN)
    desired = specs.load([str(tmp_path)])
    conn = libvirt.open(URI)
    try:
        result = execute(planner.plan(desired, observe_for(SimpleNamespace(command="apply"), desired, host)), host)
        assert result.ok, result.results
        observed = observe_for(SimpleNamespace(command="apply"), desired, host)
        pool = observed.pools["td-pool"]
        assert pool.owner is not None and pool.owner.project == "td" and pool.owner.spec_file == str(tmp_path / "a.yaml")
        assert pool.volumes == ("td-tear-vda.qcow2",)
        assert observed.network_users["td-net"] == ("td-tear",)
        assert observed.networks["td-net"].owner_spec == str(tmp_path / "a.yaml")
        assert observed.pools["default-pool"].owner is None
        # specs that no longer declare them still see them, with their records (for orphans, --prune)
        bare = specs.load([str(write(tmp_path / "bare" / "a.yaml", "project: td\ndomains: []\n"))])
        seen = observe_for(SimpleNamespace(command="plan"), bare, host)
        assert seen.pools["td-pool"].owner.project == "td" and seen.pools["td-pool"].volumes == ("td-tear-vda.qcow2",)
        assert seen.networks["td-net"].owner_project == "td"

        plan = planner.plan_destroy(desired, observe_for(SimpleNamespace(command="destroy"), desired, host))
        assert [f"{a.kind.glyph} {a.resource.value} {a.name}" for a in plan.actions] == [
            "- volume td-pool/td-tear-vda.qcow2", "- domain td-tear", "- network td-net", "- pool td-pool"]
        result = execute(plan, host)
        assert result.ok, result.results
        assert "td-pool" not in {p.name() for p in conn.listAllStoragePools(0)}
        assert "td-net" not in {n.name() for n in conn.listAllNetworks(0)}
        assert "default-pool" in {p.name() for p in conn.listAllStoragePools(0)}
        again = execute(plan, host)  # as a run killed after the removals would be re-run
        assert {r.action.name: r.status for r in again.results if r.action.resource.value in ("pool", "network")} \
            == {"td-pool": Status.UNCHANGED, "td-net": Status.UNCHANGED}
    finally:
        remove_teardown_lab(conn)


def test_a_removal_rechecks_and_keeps_what_came_to_be_used(host, tmp_path):
    """A pool that holds a volume by the time its removal runs, and a network a domain has
    come to use, are kept (unchanged, with what holds them): the plan was made from an
    older read."""
    write(tmp_path / "a.yaml", TEARDOWN)
    desired = specs.load([str(tmp_path)])
    conn = libvirt.open(URI)
    try:
        assert execute(planner.plan(desired, host.observe(pools={"td-pool"}, networks={"td-net"})), host).ok
        plan = planner.plan_destroy(desired, host.observe(pools={"td-pool"}, networks={"td-net"}, project="td"))
        conn.storagePoolLookupByName("td-pool").createXML(
            "<volume><name>late.raw</name><capacity>1024</capacity></volume>", 0)
        conn.defineXML("<domain type='test'><name>td-late</name><memory>65536</memory><os><type>hvm</type></os>"
                       "<devices><interface type='network'><source network='td-net'/></interface></devices></domain>")
        result = execute(plan, host)
        by = {r.action.name: r for r in result.results}
        assert by["td-pool"].status is Status.UNCHANGED and "late.raw" in by["td-pool"].message
        assert by["td-net"].status is Status.UNCHANGED and "td-late" in by["td-net"].message
    finally:
        if "td-late" in {d.name() for d in conn.listAllDomains(0)}:
            conn.lookupByName("td-late").undefine()
        remove_teardown_lab(conn)


def remove_teardown_lab(conn) -> None:
    """What the teardown tests leave on the shared test driver if they fail half-way."""
    if "td-pool" in {p.name() for p in conn.listAllStoragePools(0)}:
        p = conn.storagePoolLookupByName("td-pool")
        for vol in p.listAllVolumes(0):
            vol.delete(0)
        if p.isActive():
            p.destroy()
        p.undefine()
    if "td-net" in {n.name() for n in conn.listAllNetworks(0)}:
        n = conn.networkLookupByName("td-net")
        if n.isActive():
            n.destroy()
        n.undefine()
