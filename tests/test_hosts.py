"""Many hosts in one run, fast: where `hosts:` and `host:` place each resource, the errors a
spec can make with them, and runs over hosts of libvirt's test driver (one in-process
daemon per file, so they are separate) with one host that cannot be reached."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from reconcile import spec as specs
from reconcile.errors import SpecError

from .conftest import REPO, write
from .conftest import run_cli as _run_cli

DEFAULT = "test:///default"  # the default connection of these runs, looked at for moved domains


def run_cli(*args: str, **kwargs):
    return _run_cli(*args, uri=DEFAULT, **kwargs)

DOWN = "qemu+ssh://nobody@127.0.0.1:1/system?no_tty=1"  # nothing listens on port 1


def node(path: Path, pool_dir: Path) -> str:
    """A test-driver host of its own, with one pool."""
    write(path, f"""
        <node>
          <pool type='dir'><name>lab</name><target><path>{pool_dir}</path></target></pool>
        </node>
        """)
    return f"test://{path}"


def test_hosts_place_a_subtree_and_shared_declarations_go_where_needed(tmp_path):
    write(tmp_path / "top.yaml", """
        project: racks
        hosts: {rack1: "test:///one.xml", rack2: "test:///two.xml"}
        pools: [{name: lab, path: /srv/lab}]
        images: [{name: base.qcow2, pool: lab, source: /srv/base.qcow2}]
        domains:
          - {name: here, memory: 64MiB, disks: [{pool: lab, size: 1MiB}]}
          - {name: two, host: rack2, memory: 64MiB, disks: [{pool: lab, backing: base.qcow2}]}
        """)
    write(tmp_path / "rack1" / "_defaults.yaml", "defaults: {host: rack1}\n")
    write(tmp_path / "rack1" / "vms.yaml", """
        pools: [{name: lab, path: /data/lab}]
        domains: [{name: one, memory: 64MiB, disks: [{pool: lab, size: 1MiB}]}]
        """)
    desired = specs.load([str(tmp_path)])
    assert desired.hosts_used() == [None, "rack1", "rack2"]
    parts = {h: desired.on_host(h) for h in desired.hosts_used()}
    assert [d.name for d in parts[None].domains] == ["here"]
    assert [d.name for d in parts["rack1"].domains] == ["one"]
    # rack1 declares its own pool 'lab'; rack2 takes the shared one, and the image it needs
    assert [(p.name, p.path) for p in parts["rack1"].pools] == [("lab", "/data/lab")]
    assert [(p.name, p.path) for p in parts["rack2"].pools] == [("lab", "/srv/lab")]
    assert [i.name for i in parts["rack2"].images] == ["base.qcow2"]
    assert parts["rack1"].images == ()
    # the default connection keeps what it needs, and what no host needs
    assert [i.name for i in parts[None].images] == []
    assert [p.path for p in parts[None].pools] == ["/srv/lab"]


def test_the_default_connection_is_read_only_when_something_is_on_it(tmp_path):
    write(tmp_path / "a.yaml", """
        hosts: {rack2: "test:///two.xml"}
        pools: [{name: lab, path: /srv/lab}]
        domains: [{name: vm, host: rack2, memory: 64MiB, disks: [{pool: lab, size: 1MiB}]}]
        """)
    desired = specs.load([str(tmp_path)])
    assert desired.hosts_used() == ["rack2"]  # the shared pool goes where it is needed, and only there
    assert [p.name for p in desired.on_host("rack2").pools] == ["lab"]
    # a network no domain needs is the default connection's, which is then read
    write(tmp_path / "b.yaml", "networks: [{name: net1}]\n")
    assert specs.load([str(tmp_path)]).hosts_used() == [None, "rack2"]


def test_a_run_without_hosts_is_all_on_the_default_connection(tmp_path):
    write(tmp_path / "a.yaml", """
        pools: [{name: lab, path: /srv/lab}, {name: spare, path: /srv/spare}]
        networks: [{name: net1}]
        domains: [{name: vm, memory: 64MiB, disks: [{pool: lab, size: 1MiB}]}]
        """)
    desired = specs.load([str(tmp_path)])
    assert desired.hosts_used() == [None]
    assert desired.on_host(None) == desired


@pytest.mark.parametrize("text, expected", [
    ("""
     hosts: {rack1: "test:///a.xml"}
     domains: [{name: vm, host: rakc1, memory: 64MiB}]
     """, "there is no host 'rakc1'; did you mean 'rack1'? expected a name declared under hosts"),
    ("""
     hosts: {rack1: "test:///a.xml", rack2: "test:///a.xml"}
     """, "test:///a.xml is already host 'rack1'"),
    ("""
     hosts: {default: "test:///a.xml"}
     """, "hosts"),
    ("""
     hosts: {rack1: "test:///a.xml"}
     pools: [{name: lab, path: /a, host: rack1}, {name: lab, path: /b, host: rack1}]
     """, "pool 'lab' is declared twice on host 'rack1'"),
])
def test_host_mistakes_are_located(tmp_path, text, expected):
    write(tmp_path / "a.yaml", text)
    with pytest.raises(SpecError) as caught:
        specs.load([str(tmp_path)])
    messages = [str(d) for d in caught.value.diagnostics]
    assert any(expected in m for m in messages), messages
    assert all(m.startswith(str(tmp_path / "a.yaml") + ":") for m in messages), messages


def test_one_name_two_uris_across_files_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", 'hosts: {rack1: "test:///a.xml"}\n')
    write(tmp_path / "b.yaml", 'hosts: {rack1: "test:///b.xml"}\n')
    with pytest.raises(SpecError) as caught:
        specs.load([str(tmp_path)])
    assert "expected one URI per host name across the files" in str(caught.value.diagnostics[0])


def test_the_same_pool_name_on_two_hosts_is_fine(tmp_path):
    write(tmp_path / "a.yaml", """
        hosts: {rack1: "test:///a.xml", rack2: "test:///b.xml"}
        pools: [{name: lab, path: /a, host: rack1}, {name: lab, path: /a, host: rack2}]
        """)
    assert len(specs.load([str(tmp_path)]).pools) == 2


def _lab(tmp_path: Path, down: bool = False) -> Path:
    one = node(tmp_path / "one.xml", tmp_path / "pool1")
    two = node(tmp_path / "two.xml", tmp_path / "pool2")
    write(tmp_path / "specs" / "lab.yaml", f"""
        project: racks
        hosts: {{one: "{one}", two: "{two}"{f', gone: "{DOWN}"' if down else ''}}}
        domains:
          - {{name: vm-one, host: one, memory: 64MiB, disks: [{{pool: lab, size: 1MiB}}]}}
          - {{name: vm-two, host: two, memory: 64MiB, disks: [{{pool: lab, size: 1MiB}}]}}
        """ + ("""
          - {name: vm-gone, host: gone, memory: 64MiB}
        """ if down else ""))
    return tmp_path / "specs"


def _schema_valid(doc: dict) -> dict:
    jsonschema.validate(doc, json.loads((REPO / "schemas" / "plan.schema.json").read_text()))
    return doc


def test_plan_and_apply_over_two_hosts_group_by_host(tmp_path):
    lab = _lab(tmp_path)
    planned = run_cli("plan", str(lab), check=0).stdout
    assert planned.index("on host one (test://") < planned.index("+ create domain vm-one")
    assert planned.index("on host two (test://") < planned.index("+ create domain vm-two")
    assert planned.index("+ create domain vm-one") < planned.index("on host two")

    doc = _schema_valid(json.loads(run_cli("apply", str(lab), "-o", "json", check=0).stdout))
    assert {(a["host"], a["name"]) for a in doc["actions"] if a["resource"] == "domain"} == {
        ("one", "vm-one"), ("two", "vm-two")}
    assert {r["host"] for r in doc["results"]} == {"one", "two"}
    assert [(h["name"], h["available"], h["ok"]) for h in doc["hosts"]] == [("one", True, True), ("two", True, True)]
    assert doc["ok"] and doc["recap"]["applied"] == 6

    only = run_cli("plan", str(lab), "--host", "two", check=0).stdout
    assert "on host two" in only and "host one" not in only
    wrong = run_cli("plan", str(lab), "--host", "tow")
    assert wrong.returncode == 1
    assert "--host tow: no such host in the specs; did you mean 'two'?" in wrong.stderr


def test_a_host_that_cannot_be_reached_fails_alone(tmp_path):
    lab = _lab(tmp_path, down=True)
    out = run_cli("apply", str(lab))
    assert out.returncode == 1
    assert "Traceback" not in out.stdout + out.stderr
    assert f"Host gone ({DOWN}) could not be read" in out.stdout
    assert "Connection refused" in out.stdout
    assert "Recap one: 3 applied" in out.stdout and "Recap two: 3 applied" in out.stdout
    assert f"error: host gone ({DOWN})" in out.stderr

    planned = run_cli("plan", str(lab), "--detailed-exitcode", "-o", "json")
    assert planned.returncode == 2  # changes wait on the hosts that answer
    doc = _schema_valid(json.loads(planned.stdout))
    gone = next(h for h in doc["hosts"] if h["name"] == "gone")
    assert gone["available"] is False and "Connection refused" in gone["error"]
    assert {a["host"] for a in doc["actions"]} == {"one", "two"}
    # nothing to do elsewhere: an unreadable host is an error
    assert run_cli("plan", str(lab), "--host", "gone").returncode == 1
