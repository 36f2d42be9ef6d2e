"""`-o markdown`: plans and results as a pull-request comment, read back through a real
Markdown parser (markdown-it-py, CommonMark with tables and raw HTML passed through, as
GitHub and GitLab render comments) and checked on the HTML it gives. Fast, no daemon: the
plans are built by hand, and one run goes through the command line on the test driver.
"""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt

from reconcile.cli import markdown
from reconcile.cli.output import Output
from reconcile.cli.parser import parse
from reconcile.model import (Action, ActionKind, ActionResult, ApplyResult, Change, ChangeClass, Check, Condition,
                             ConditionKind, Note, NoteKind, Pending, Plan, Readiness, ResourceKind, Status)

from .conftest import REPO, write

HOSTILE = "web|01<script>alert(1)</script>"
HOSTILE_REASON = "a `tick` & a | pipe\nand a <b>second</b> line"


class Page(HTMLParser):
    """The rendered HTML as tables (rows of cell texts), <details> blocks (summary and
    text), and every tag seen."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self.details: list[dict[str, str]] = []
        self.tags: list[str] = []
        self._cell: list[str] | None = None
        self._in_summary = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "details":
            self.details.append({"summary": "", "text": ""})
        elif tag == "summary":
            self._in_summary = True
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "summary":
            self._in_summary = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self.details:
            self.details[-1]["summary" if self._in_summary else "text"] += data


def rendered(text: str) -> tuple[str, Page]:
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    return html, Page(html)


def act(kind: ActionKind, name: str, reason: str, *changes: Change, resource=ResourceKind.DOMAIN) -> Action:
    return Action(kind, resource, name, reason, changes=tuple(changes))


RACK1 = Plan(project="lab", uri="qemu+ssh://admin@rack1/system", actions=(
    act(ActionKind.CREATE, "db01", "not on the host", Change(("memory",), None, 524288), Change(("vcpus",), None, 2)),
    act(ActionKind.UPDATE, "web02", "2 fields differ",
        Change(("autostart",), True, False, ChangeClass.LIVE, drift=True),
        Change(("memory",), 262144, 524288, ChangeClass.RESTART)),
    act(ActionKind.DESTROY, "lab/old-vda.qcow2", "created by reconcile for old", resource=ResourceKind.VOLUME),
    act(ActionKind.START, "db01", "the spec says running; it is created stopped", Change(("state",), None, "running")),
))
RACK2 = Plan(project="lab", uri="qemu+ssh://admin@rack2/system", actions=(
    act(ActionKind.STOP, "cache01", "the spec says stopped; it is running", Change(("state",), "running", "stopped")),
    act(ActionKind.RESET, HOSTILE, HOSTILE_REASON,
        Change(("cloud_init", "instance_id"), "i-1", "i-1-r1"),
        Change(("cloud_init", "user_data"), "sha256:1a2b3c4d5e6f", "sha256:6f5e4d3c2b1a"),
        Change(("note",), "```", "````x")),
), notes=(
    Note(ResourceKind.DOMAIN, "intruder", "belongs to project 'other'; not changed", NoteKind.REFUSED),
    Note(ResourceKind.DOMAIN, "handmade", "exists, not created by reconcile", NoteKind.UNMANAGED),
    Note(ResourceKind.DOMAIN, "quiet", "matches its spec", NoteKind.CONVERGED),
), pending=(
    Pending("cache02", "in the config, waiting for the running domain to restart (on_change: defer)",
            (Change(("vcpus",), 1, 2, ChangeClass.RESTART),)),
))


def two_hosts(results: bool = False) -> list[markdown.Part]:
    parts = []
    for label, plan in (("rack1", RACK1), ("rack2", RACK2)):
        result = None
        if results:
            statuses = [Status.APPLIED, Status.UNCHANGED, Status.FAILED, Status.SKIPPED]
            result = ApplyResult(plan, tuple(
                ActionResult(a, statuses[i % 4], message="boom | <i>x</i>" if statuses[i % 4] is Status.FAILED else "",
                             started=10.0, finished=10.5)
                for i, a in enumerate(plan.actions)), wall_time=0.5)
        parts.append(markdown.Part(label, plan.uri, plan, result))
    return parts


def test_each_host_has_a_heading_and_a_table_row_per_action():
    html, page = rendered(markdown.document("lab", two_hosts()))
    assert "<h3>Host rack1 (qemu+ssh://admin@rack1/system)</h3>" in html
    assert "<h3>Host rack2 (qemu+ssh://admin@rack2/system)</h3>" in html
    first, second = page.tables
    assert first[0] == ["", "action", "resource", "name", "reason"]
    assert first[1:] == [
        ["+", "create", "domain", "db01", "not on the host"],
        ["~", "update", "domain", "web02", "2 fields differ"],
        ["-", "destroy", "volume", "lab/old-vda.qcow2", "created by reconcile for old"],
        [">", "start", "domain", "db01", "the spec says running; it is created stopped"],
    ]
    assert "<td><code>+</code></td>" in html and "<td><code>~</code></td>" in html  # glyphs shown literally
    assert [row[:2] for row in second[1:]] == [["<", "stop"], ["^", "reset"]]


def test_hostile_names_and_reasons_stay_in_their_cell_and_never_become_html():
    html, page = rendered(markdown.document("lab", two_hosts(results=True), "apply"))
    row = next(r for r in page.tables[1] if r[1] == "reset")
    assert len(row) == 6
    assert row[3] == HOSTILE
    assert row[4] == HOSTILE_REASON
    assert "<script" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;script&gt;" in html
    assert all(len(r) == 6 for table in page.tables for r in table)  # no cell split by a pipe


def test_a_line_break_in_a_summary_cannot_end_the_html_block():
    name = "evil\n\n<img src=x onerror=alert(1)>\n\n# heading"
    plan = Plan(project="lab", uri="test:///default", actions=(
        act(ActionKind.UPDATE, name, "1 field differs", Change(("vcpus",), 1, 2, ChangeClass.RESTART)),))
    html, page = rendered(markdown.plan_document(plan))
    assert "<img" not in html and "<h1>" not in html
    assert page.details[0]["summary"] == "~ update domain evil  <img src=x onerror=alert(1)>  # heading: 1 change"
    assert page.tables[0][1][3] == name  # a cell keeps the breaks, as <br>


def test_every_actions_changes_are_in_a_collapsible_block():
    text = markdown.document("lab", two_hosts())
    assert "</summary>\n\n```" in text  # a blank line: GitHub and GitLab read the Markdown inside
    _, page = rendered(text)
    by_summary = {d["summary"]: d["text"] for d in page.details}
    update = by_summary["~ update domain web02: 2 changes"]
    assert "autostart: true -> false  [live]  (drift: changed outside reconcile)" in update
    assert "memory: 256MiB -> 512MiB  [restart]" in update
    assert "memory: 512MiB" in by_summary["+ create domain db01: 2 changes"]
    reset = by_summary[f"^ reset domain {HOSTILE}: 3 changes"]
    assert "cloud_init.user_data: sha256:1a2b3c4d5e6f -> sha256:6f5e4d3c2b1a" in reset  # as the plan holds it
    assert "note: ``` -> ````x" in reset  # the fence is longer than any run inside
    assert "vcpus: 1 -> 2  [restart]" in by_summary["* pending domain cache02: 1 change"]
    assert "lab/old-vda.qcow2" not in " ".join(by_summary)  # no changes, no block


def test_drift_pending_refused_and_notes_have_their_own_sections():
    html, _ = rendered(markdown.document("lab", two_hosts()))
    drift = html.split("<h4>Drift</h4>")[1].split("<h3>")[0]
    assert "<code>~</code> update domain web02: autostart: true -&gt; false" in drift
    pending = html.split("<h4>Pending a restart</h4>")[1]
    assert "<code>*</code> pending domain cache02: in the config, waiting" in pending
    refused = html.split("<h4>Refused</h4>")[1]
    assert "<code>!</code> refuse domain intruder: belongs to project 'other'; not changed" in refused
    notes = html.split("<h4>Notes</h4>")[1]
    assert "unmanaged domain handmade" in notes and "quiet" not in html  # converged: not shown


def test_the_summary_line_counts_every_host():
    html, _ = rendered(markdown.document("lab", two_hosts()))
    summary = html.split("</h2>")[1].split("<h3>")[0]
    assert "<strong>Plan:</strong> 1 to create, 1 to update, 1 to destroy, 1 to start, 1 to stop, 1 to reset." in summary
    assert "<strong>Refused:</strong> 1." in summary
    assert "<strong>Drift:</strong> the host was changed outside reconcile." in summary
    assert "<strong>Pending a restart:</strong> 1 domain." in summary
    assert "2 hosts." in summary and "Recap" not in summary


def test_apply_results_show_each_actions_status_and_the_recap():
    html, page = rendered(markdown.document("lab", two_hosts(results=True), "apply"))
    assert "<h2>Results of <code>reconcile apply</code> for project lab</h2>" in html
    assert page.tables[0][0][-1] == "result"
    assert [r[-1] for r in page.tables[0][1:]] == ["applied [0.5s]", "unchanged [0.5s]",
                                                   "failed (boom | <i>x</i>) [0.5s]", "skipped [0.5s]"]
    summary = html.split("</h2>")[1].split("<h3>")[0]
    # unchanged also counts the notes that are not refusals (2 on rack2), failed the refusal
    assert "<strong>Recap:</strong> 2 applied, 4 unchanged, 2 failed, 1 skipped. <strong>Failed.</strong>" in summary
    assert "Recap: 1 applied, 1 unchanged, 1 failed, 1 skipped in 0.5s" in html.split("Host rack1")[1]


def test_a_single_host_run_is_labelled_by_its_uri_and_a_host_down_is_said():
    plan = Plan(project="tour", uri="qemu:///system", actions=RACK1.actions[:1])
    html, page = rendered(markdown.plan_document(plan))
    assert "<h2>Plan for project tour</h2>" in html and "<h3>qemu:///system</h3>" in html
    assert page.tables[0][1] == ["+", "create", "domain", "db01", "not on the host"]
    result = ApplyResult(plan, (ActionResult(plan.actions[0], Status.APPLIED, started=1.0, finished=1.2),), 0.25)
    ready = Readiness("db01", (Check(Condition(ConditionKind.RUNNING), True, "running", 0.1),), waited=0.1)
    html, _ = rendered(markdown.apply_document(result, "rebuild", (ready,)))
    assert "Results of <code>reconcile rebuild</code>" in html
    assert "1 applied, 0 unchanged, 0 failed, 0 skipped in 0.2s. <strong>OK.</strong>" in html
    assert "<h4>Readiness</h4>" in html and "ready db01 [0.1s]" in html
    down = markdown.Part("rack3", "qemu+ssh://rack3/system", error="Connection refused | <x>")
    html, _ = rendered(markdown.document("lab", [*two_hosts(), down]))
    assert "3 hosts, 1 unavailable." in html
    assert "<strong>Could not be read:</strong> Connection refused | &lt;x&gt;" in html


def test_an_empty_plan_says_no_changes_and_a_refusal_is_not_one():
    html, page = rendered(markdown.plan_document(Plan(project="tour", uri="test:///default")))
    assert "<strong>No changes.</strong>" in html and not page.tables and not page.details
    refused = Plan(project="tour", uri="test:///default", notes=RACK2.notes[:1])
    html, _ = rendered(markdown.plan_document(refused))
    assert "No changes" not in html and "<strong>Refused:</strong> 1." in html


def test_markdown_is_an_output_of_plan_apply_and_rebuild_only(tmp_path):
    for command in ("plan", "apply", "rebuild"):
        args = parse([command, "-o", "markdown", str(tmp_path)])
        console = Output(args)
        assert console.markdown and not console.json and console.quiet_apply and console.document
    for command in ("destroy", "status", "validate"):
        with pytest.raises(Exception, match="invalid choice: 'markdown'"):
            parse([command, "-o", "markdown", str(tmp_path)])


def test_plan_markdown_through_the_command_line_on_the_test_driver(tmp_path):
    write(tmp_path / "specs" / "a.yaml", """
        project: rctest-md
        domains:
          - {name: rctest-md-a, memory: 64MiB, state: stopped}
        """)
    done = subprocess.run([sys.executable, "-m", "reconcile", "plan", "-c", "test:///default", "-o", "markdown",
                           str(tmp_path / "specs")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("## Plan for project rctest-md\n")
    html, page = rendered(done.stdout)
    assert "<h3>test:///default</h3>" in html
    assert page.tables[0][1:] == [["+", "create", "domain", "rctest-md-a", "not on the host"]]
    assert page.details[0]["summary"] == "+ create domain rctest-md-a: 6 changes"
    assert "memory: 64MiB" in page.details[0]["text"]
