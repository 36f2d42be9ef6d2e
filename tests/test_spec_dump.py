"""Spec YAML out: comments, whatever text they hold, stay comments for every YAML reader."""

from __future__ import annotations

import yaml

from reconcile import spec as specs
from reconcile.spec.dump import comment_line

HOSTILE = [
    "not managed: <sound model=\"ich9\" />",
    "line\n- name: injected\n  memory: 1GiB",
    "carriage\rreturn",
    "nel\x85next",
    "line\u2028separator and paragraph\u2029separator",
    "nul\x00 bell\x07 esc\x1b tab\t del\x7f",
    "bom\ufeff zero-width\u200b private\ue000 unassigned\U000e0080",
    "back\\slash \\n not a newline",
    "'quotes' \"and\" # hashes: and colons: { [ ] } & * ! | > % @ `",
    "émoji 🎉 and 中文",
]


def test_a_comment_is_one_printable_line_whatever_it_holds():
    for text in HOSTILE:
        line = comment_line(text)
        assert line.startswith("# ") and "\n" not in line and "\r" not in line
        assert all(ch.isprintable() for ch in line), repr(line)
    assert comment_line("a\nb\\c\x85") == "# a\\nb\\\\c\\x85"


def test_commented_specs_read_back_as_the_same_data_by_both_yaml_readers(tmp_path):
    domains = [{"name": f"d{i}", "memory": "64MiB", "interfaces": []} for i in range(3)]
    doc = {"project": "p", "domains": [specs.Commented(domains[0], tuple(HOSTILE)), domains[1],
                                       specs.Commented(domains[2], ("last",))]}
    text = specs.dump(doc)
    assert text.count("\n# ") == len(HOSTILE) + 1 and text.startswith("project: p\ndomains:\n# not managed")
    assert yaml.safe_load(text) == specs.plain(doc) == {"project": "p", "domains": domains}  # YAML 1.1
    (tmp_path / "a.yaml").write_text(text, encoding="utf-8")
    desired = specs.load([str(tmp_path)])  # the strict YAML 1.2 reader
    assert [d.name for d in desired.domains] == ["d0", "d1", "d2"]
    # Without comments, the text is what PyYAML writes for the whole document.
    assert specs.dump(specs.plain(doc)) == yaml.safe_dump(specs.plain(doc), sort_keys=False,
                                                           default_flow_style=None, width=100)
