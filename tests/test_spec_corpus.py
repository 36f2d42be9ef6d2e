"""One generic runner for the hostile and malformed specs in tests/corpus/.

A case is a file (or a directory of files) that must be rejected. Each file names the
diagnostics it must produce in comments, `# expect: LINE:COL: text` (text is a substring of
`resource 'NAME': FIELD: message`); a file that cannot hold a comment (empty, not UTF-8)
has them in a NAME.expect file beside it. Every diagnostic must be expected and every
expectation met: adding a case is adding a file. None may reach libvirt: the last test runs
the whole corpus through `plan` against a URI that cannot be reached.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reconcile import spec as specs
from reconcile.errors import SpecError

from .conftest import run_cli

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(p for p in CORPUS.iterdir() if p.suffix in (".yaml", ".yml") or p.is_dir())
EXPECT = re.compile(r"^# expect: (\d+):(\d+): (.+)$", re.M)


def expectations(case: Path) -> list[tuple[str, int, int, str]]:
    files = sorted(case.rglob("*.y*ml")) if case.is_dir() else [case]
    out = []
    for f in files:
        sidecar = f.with_suffix(".expect")
        text = sidecar.read_text() if sidecar.exists() else f.read_bytes().decode("utf-8", "replace")
        out += [(str(f), int(m[1]), int(m[2]), m[3]) for m in EXPECT.finditer(text)]
    return out


def rest_of(d) -> str:
    parts = ([f"resource '{d.resource}'"] if d.resource else []) + ([d.field] if d.field else []) + [d.message]
    return ": ".join(parts)


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_case_is_rejected_with_exactly_its_diagnostics(case):
    expected = expectations(case)
    assert expected, f"{case.name} names no diagnostic"
    with pytest.raises(SpecError) as caught:
        specs.load([str(case)])
    got = caught.value.diagnostics
    unmatched = list(got)
    for file, line, col, text in expected:
        hit = next((d for d in unmatched if d.file == file and d.line == line and d.column == col
                    and text in rest_of(d)), None)
        assert hit, f"expected {Path(file).name}:{line}:{col}: {text}\n got:\n" + "\n".join(map(str, got))
        unmatched.remove(hit)
    assert not unmatched, "unexpected diagnostics:\n" + "\n".join(map(str, unmatched))
    assert got == sorted(got, key=lambda d: (d.file, d.line, d.column))


@pytest.mark.parametrize("command", ["validate", "plan", "apply"])
def test_the_whole_corpus_fails_cleanly_before_libvirt(command):
    """One run reports every problem; no traceback, and the unreachable host is never tried."""
    proc = run_cli(command, str(CORPUS), uri="qemu+ssh://reconcile-test.invalid/system")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert "reconcile-test.invalid" not in proc.stderr + proc.stdout
    *lines, summary = proc.stderr.splitlines()
    assert summary.endswith("problems in the specs; nothing was changed on the host."), summary
    assert int(summary.split()[0]) == len(lines) > 100
    located = re.compile(r"^\S+\.ya?ml:[1-9]\d*:[1-9]\d*: ")
    assert all(located.match(line) for line in lines), [line for line in lines if not located.match(line)]
