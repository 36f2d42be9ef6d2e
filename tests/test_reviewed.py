"""Reviewed plans on the real daemon: `plan --out` writes the plan a reviewer approves, and
`apply FILE` applies exactly that plan, or refuses it whole, naming what moved, when the
host or the specs changed since. No guest boots."""

from __future__ import annotations

import json

import jsonschema
import pytest

from .conftest import DOMAIN_TYPE, REPO, run_cli

pytestmark = pytest.mark.libvirtd


def _spec(lab, names: list[str], memory: str = "64MiB") -> None:
    lab.spec("vms.yaml", "domains:\n" + "".join(
        f"  - {{name: {n}, type: {DOMAIN_TYPE}, memory: {memory}, stop_timeout: 0, "
        f"disks: [{{pool: {lab.pool}, size: 1MiB}}]}}\n" for n in names))


def test_apply_of_a_reviewed_plan_does_exactly_it_or_refuses(lab, tmp_path):
    a, b, c = lab.dom("a"), lab.dom("b"), lab.dom("c")
    _spec(lab, [a, b])
    lab.cli("apply", check=0)

    # Reviewed: one more domain. Then a is stopped behind reconcile's back.
    _spec(lab, [a, b, c])
    plan = tmp_path / "plan.json"
    lab.cli("plan", "--out", str(plan), check=0)
    shown = run_cli("show", str(plan), check=0).stdout
    assert f"+ create domain {c}" in shown
    lab.conn.lookupByName(a).destroy()
    refused = run_cli("apply", str(plan))
    assert refused.returncode == 1
    assert "Traceback" not in refused.stdout + refused.stderr
    assert f"domain {a}: state running -> stopped since the plan was made; " not in refused.stderr  # one line each
    assert f"domain {a}: state running -> stopped since the plan was made" in refused.stderr, refused.stderr
    assert "nothing was done" in refused.stderr
    assert c not in lab.domain_names()  # nothing done
    dry = run_cli("apply", "--dry-run", str(plan))  # a dry run says so too, not the plan it would make now
    assert dry.returncode == 1 and f"domain {a}: state running -> stopped since the plan was made" in dry.stderr
    as_json = run_cli("apply", "-o", "json", str(plan))
    jsonschema.validate(json.loads(as_json.stdout), json.loads((REPO / "schemas" / "error.schema.json").read_text()))

    # Back as it was: the plan applies, action for action.
    lab.conn.lookupByName(a).create()
    done = run_cli("apply", "-o", "json", str(plan), check=0)
    doc = json.loads(done.stdout)
    jsonschema.validate(doc, json.loads((REPO / "schemas" / "plan.schema.json").read_text()))
    reviewed = json.loads(plan.read_text())
    assert [r["id"] for r in doc["results"]] == [x["id"] for x in reviewed["plan"]["actions"]]
    assert all(r["status"] == "applied" for r in doc["results"])
    assert c in lab.domain_names()
    lab.cli("plan", "--detailed-exitcode", check=0)

    # Applied twice: the second finds it done (the host moved: by the plan itself).
    again = run_cli("apply", str(plan))
    assert again.returncode == 1 and f"domain {c}: created since the plan was made" in again.stderr

    # A changed spec file, another project, another format version, another host: refused.
    lab.cli("plan", "--out", str(plan), check=0)
    _spec(lab, [a, b, c], memory="96MiB")
    edited = run_cli("apply", str(plan))
    assert edited.returncode == 1 and f"spec file {lab.specs / 'vms.yaml'}: changed since the plan was made" \
        in edited.stderr, edited.stderr
    _spec(lab, [a, b, c])
    for field, value, expected in (("project", "someone-else", "the plan is of project 'someone-else'"),
                                   ("format_version", 9, "a plan file of format version 9")):
        doc = json.loads(plan.read_text())
        doc[field] = value
        other = tmp_path / f"{field}.json"
        other.write_text(json.dumps(doc))
        out = run_cli("apply", str(other))
        assert out.returncode == 1 and expected in out.stderr, out.stderr
    elsewhere = run_cli("apply", str(plan), uri="test:///default")
    assert elsewhere.returncode == 1
    assert "the plan was made against qemu:///system, this run connects to test:///default" in elsewhere.stderr
    assert c in lab.domain_names() and "Traceback" not in elsewhere.stderr
