"""Moving a domain to another host, fast, on hosts of libvirt's test driver (one in-process
daemon per file): a domain is destroyed on its old host before it is created on its new
one, only with --allow-recreate, and never created while it may still run where it was.
Each host file starts with domains that reconcile's metadata says are the project's."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from reconcile.codec.ownership import ownership_element
from reconcile.model import Ownership

from .conftest import run_cli, write

DOWN = "qemu+ssh://nobody@127.0.0.1:1/system?no_tty=1"  # nothing listens on port 1
PROJECT = "movers"


def node(path: Path, *owned: str) -> str:
    """A test-driver host holding domains `owned`, each recorded as this project's."""
    root = ET.Element("node")
    for name in owned:
        dom = ET.SubElement(root, "domain", type="test")
        ET.SubElement(dom, "name").text = name
        ET.SubElement(dom, "memory", unit="MiB").text = "64"
        os_ = ET.SubElement(dom, "os")
        ET.SubElement(os_, "type").text = "hvm"
        meta = ET.SubElement(dom, "metadata")
        meta.append(ownership_element(Ownership(project=PROJECT, spec_file=str(path.parent / "specs" / "vms.yaml"))))
    path.write_text(ET.tostring(root, encoding="unicode"))
    return f"test://{path}"


def specs(tmp_path: Path, hosts: dict[str, str], placed: dict[str, str | None]) -> Path:
    lines = [f"project: {PROJECT}", "hosts: " + json.dumps(hosts), "domains:"]
    for name, host in placed.items():
        lines.append(f"  - {{name: {name}, memory: 64MiB, state: stopped" + (f", host: {host}" if host else "") + "}")
    write(tmp_path / "specs" / "vms.yaml", "\n".join(lines) + "\n")
    return tmp_path / "specs"


def domain_results(doc: dict) -> list[tuple[str, str, str, str]]:
    """(host, action, domain, status) of each domain action, in the order they ended."""
    return sorted(((r["host"], r["action"], r["name"], r["status"]) for r in doc["results"]
                   if r["resource"] == "domain"), key=lambda r: r)


def test_swapped_domains_both_move_each_destroyed_before_it_is_created(tmp_path):
    one, two = node(tmp_path / "one.xml", "a"), node(tmp_path / "two.xml", "b")
    lab = specs(tmp_path, {"one": one, "two": two}, {"a": "two", "b": "one"})
    refused = run_cli("plan", str(lab), uri="test:///default")
    assert refused.returncode == 1
    assert "its spec places it on this host, but it is on host two" in refused.stdout
    assert "pass --allow-recreate" in refused.stdout

    moved = run_cli("apply", "--allow-recreate", "-o", "json", str(lab), uri="test:///default")
    doc = json.loads(moved.stdout)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    got = {(h, a, n): (s, r) for h, a, n, s, r in (
        (r["host"], r["action"], r["name"], r["status"], r) for r in doc["results"] if r["resource"] == "domain")}
    assert got[("one", "destroy", "a")][0] == "applied"
    assert got[("two", "destroy", "b")][0] == "applied"
    assert got[("two", "create", "a")][0] == "applied"
    assert got[("one", "create", "b")][0] == "applied"
    # each domain gone from its old host before it was defined on the new one
    assert got[("one", "destroy", "a")][1]["finished"] <= got[("two", "create", "a")][1]["started"]
    assert got[("two", "destroy", "b")][1]["finished"] <= got[("one", "create", "b")][1]["started"]
    assert doc["ok"] and doc["recap"]["failed"] == doc["recap"]["skipped"] == 0


def test_a_domain_on_the_unused_default_connection_is_moved_from_it(tmp_path):
    """Every domain now on a named host: the default connection, which the specs no longer
    use, is still looked at, and the domain it holds is moved, not run twice."""
    default = node(tmp_path / "default.xml", "a")
    lab = specs(tmp_path, {"two": node(tmp_path / "two.xml")}, {"a": "two"})
    refused = run_cli("plan", str(lab), uri=default)
    assert refused.returncode == 1, refused.stdout
    assert "it is on host default" in refused.stdout

    moved = json.loads(run_cli("apply", "--allow-recreate", "-o", "json", str(lab), uri=default, check=0).stdout)
    assert {("default", "destroy", "a", "applied"), ("two", "create", "a", "applied")} <= set(domain_results(moved))
    assert moved["ok"]


def test_a_move_to_or_from_a_host_the_run_does_not_change_is_never_half_made(tmp_path):
    one = node(tmp_path / "one.xml", "a")
    lab = specs(tmp_path, {"one": one, "two": node(tmp_path / "two.xml")}, {"a": "two", "keep": "one"})
    # --host two: a is on host one, which this run only reads; it is not created on two
    only_new = run_cli("apply", "--allow-recreate", "--host", "two", "-o", "json", str(lab), uri="test:///default")
    doc = json.loads(only_new.stdout)
    assert only_new.returncode == 1
    refusal = next(n for n in doc["notes"] if n["name"] == "a")
    assert refusal["kind"] == "refused"
    assert "not created here: it is on host one, which this run does not change" in refusal["message"]
    assert domain_results(doc) == []
    # --host one with --prune: a is not an orphan of host one, it waits for its move
    only_old = run_cli("apply", "--allow-recreate", "--prune", "--host", "one", "-o", "json", str(lab),
                       uri="test:///default")
    doc = json.loads(only_old.stdout)
    assert ("one", "destroy", "a", "applied") not in domain_results(doc)
    kept = next(n for n in doc["notes"] if n["name"] == "a")
    assert "kept here, since host two, where its spec places it, is not changed by this run" in kept["message"]


def test_a_domain_is_not_destroyed_for_a_move_to_a_host_that_cannot_be_read(tmp_path):
    one = node(tmp_path / "one.xml", "a", "stays")
    lab = specs(tmp_path, {"one": one, "gone": DOWN}, {"a": "gone", "stays": "one"})
    done = run_cli("apply", "--allow-recreate", "-o", "json", str(lab), uri="test:///default")
    doc = json.loads(done.stdout)
    assert done.returncode == 1  # the host that is down
    assert [r for r in domain_results(doc) if r[2] == "a"] == []
    kept = next(n for n in doc["notes"] if n["name"] == "a")
    assert "kept here, since host gone, where its spec places it, could not be read" in kept["message"]


def test_a_later_round_skips_what_needs_an_earlier_rounds_failure():
    """The executor takes the results of an earlier round (`settled`): what depends on one
    that failed is skipped, what depends on one that succeeded runs, and after a lost
    connection nothing more is attempted."""
    from reconcile.apply.executor import execute
    from reconcile.model import Action, ActionKind, ActionResult, Plan, ResourceKind, Status
    from reconcile.model.steps import CreateVolume

    from .test_concurrency import Recording

    def volume(name: str, *after: str) -> Action:
        return Action(ActionKind.CREATE, ResourceKind.VOLUME, f"p/{name}", "", depends_on=after,
                      payload=CreateVolume("p", name, 1, "raw"))

    gone, done = volume("gone"), volume("done")
    settled = {gone.id: ActionResult(gone, Status.FAILED, "no"), done.id: ActionResult(done, Status.APPLIED)}
    needs_gone = volume("a", gone.id)
    after_that, needs_done, free = volume("b", needs_gone.id), volume("c", done.id), volume("d")
    plan = Plan("x", "test:///default", (needs_gone, after_that, needs_done, free))
    got = {r.action.name: (r.status, r.message) for r in execute(plan, Recording(), settled=settled).results}
    assert got == {"p/a": (Status.SKIPPED, f"because {gone.id} failed"),
                   "p/b": (Status.SKIPPED, f"because {needs_gone.id} skipped"),
                   "p/c": (Status.APPLIED, ""), "p/d": (Status.APPLIED, "")}
    lost = {gone.id: ActionResult(gone, Status.FAILED, "lost", connection_lost=True)}
    after_lost = execute(Plan("x", "test:///default", (free,)), Recording(), settled=lost)
    assert [(r.status, r.message) for r in after_lost.results] == [
        (Status.SKIPPED, "not attempted: the connection to the host was lost")]
    assert after_lost.connection_lost
