"""The spec language as a user meets it: expansion, references, the schema as documentation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from reconcile import spec as specs
from reconcile.errors import SpecError
from reconcile.spec.reference import reference_markdown

from .conftest import REPO, run_cli, write


def load(tmp_path, **files):
    for name, text in files.items():
        write(tmp_path / name.replace("__", "/"), text)
    return specs.load([str(tmp_path)])


def problems(tmp_path, **files) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load(tmp_path, **files)
    return [str(d).replace(str(tmp_path) + "/", "") for d in caught.value.diagnostics]


# ------------------------------------------------------------------ expansion

def test_count_expands_names_and_disk_names(tmp_path):
    desired = load(tmp_path, **{"a.yaml": """
        domains:
          - name: node{index:02}
            count: 3
            memory: 256MiB
            disks: [{size: 1GiB, name: "node{index}-root.qcow2"}, {size: 2GiB}]
        """})
    assert [d.name for d in desired.domains] == ["node01", "node02", "node03"]
    assert [[x.volume for x in d.disks] for d in desired.domains] == [
        ["node1-root.qcow2", "node01-vdb.qcow2"], ["node2-root.qcow2", "node02-vdb.qcow2"],
        ["node3-root.qcow2", "node03-vdb.qcow2"]]


def test_count_zero_declares_nothing(tmp_path):
    desired = load(tmp_path, **{"a.yaml": "domains: [{name: 'n{index}', count: 0, memory: 256MiB}]\n"})
    assert desired.domains == ()


def test_precedence_directory_defaults_file_defaults_profile_domain(tmp_path):
    desired = load(tmp_path, **{
        "_defaults.yaml": """
            defaults: {memory: 128MiB, vcpus: 1, autostart: true, graphics: {type: vnc, listen: 127.0.0.1}}
            profiles: {big: {memory: 1GiB, vcpus: 4}}
            """,
        "lab__web.yaml": """
            defaults: {vcpus: 2, graphics: {type: spice}}
            domains:
              - {name: plain}
              - {name: sized, profile: big}
              - {name: own, profile: big, vcpus: 8, graphics: {port: 5990}}
            """,
        "other.yaml": "domains: [{name: elsewhere, memory: 256MiB}]\n",
    })
    got = {d.name: (d.memory // 1024, d.vcpus, d.autostart, d.graphics) for d in desired.domains}
    assert got["plain"][:3] == (128, 2, True)
    assert got["sized"][:3] == (1024, 4, True)
    assert got["own"][:3] == (1024, 8, True)
    # mappings merge field by field: type from the file, listen from the directory
    assert (got["plain"][3].type, got["plain"][3].listen) == ("spice", "127.0.0.1")
    assert (got["own"][3].type, got["own"][3].listen, got["own"][3].port) == ("spice", "127.0.0.1", 5990)
    # _defaults.yaml reaches every file below its directory, including other.yaml beside it
    assert got["elsewhere"][:3] == (256, 1, True)


def test_defaults_can_choose_a_profile(tmp_path):
    desired = load(tmp_path, **{"a.yaml": """
        profiles: {small: {memory: 256MiB}}
        defaults: {profile: small}
        domains: [{name: a}, {name: b, memory: 512MiB}]
        """})
    assert [d.memory // 1024 for d in desired.domains] == [256, 512]


def test_an_error_from_a_profile_points_at_the_profile_line_in_its_own_file(tmp_path):
    out = problems(tmp_path, **{
        "profiles.yaml": "profiles:\n  odd: {memory: 1000KiB}\n",
        "web.yaml": "domains:\n  - {name: web01, profile: odd}\n  - {name: web02, profile: odd}\n",
    })
    assert out == [
        "profiles.yaml:2:17: resource 'web01': memory: '1000KiB' is not a whole number of MiB; libvirt would round "
        "it, so write e.g. 1MiB",
        "profiles.yaml:2:17: resource 'web02': memory: '1000KiB' is not a whole number of MiB; libvirt would round "
        "it, so write e.g. 1MiB",
    ]


def test_copies_that_share_an_explicit_volume_name_are_caught(tmp_path):
    out = problems(tmp_path, **{"a.yaml": """
        domains:
          - name: n{index}
            count: 2
            memory: 256MiB
            disks: [{size: 1GiB, name: shared.qcow2}]
        """})
    assert out == ["a.yaml:5:13: resource 'n2': disks[0]: volume default/shared.qcow2 is already used by domain "
                   "'n1'; expected each disk to have its own volume (give it a name)"]


# ------------------------------------------------------------------ all at once, references

def test_semantic_checks_still_run_for_sound_resources_of_a_file_with_errors(tmp_path):
    out = problems(tmp_path, **{"a.yaml": """
        project: [not, a, name]
        domains:
          - {name: a, memory: 256MiB, boot: [cdrom]}
          - {name: b, memory: lots}
        pools:
          - {name: p, path: /srv/p}
          - {name: q, path: /srv/p}
        """, "b.yaml": "domains: [{name: a, memory: 256MiB}]\n"})
    assert [line.split(": ", 1)[0] for line in out] == ["a.yaml:1:1", "a.yaml:3:38", "a.yaml:4:23", "a.yaml:7:21",
                                                        "b.yaml:1:18"]
    assert "boot from cdrom but the domain has no cdroms" in out[1]
    assert "declared twice" in out[4]


def test_pools_not_declared_are_expected_on_the_host_with_a_hint(tmp_path):
    desired = load(tmp_path, **{"a.yaml": """
        pools: [{name: images, path: /srv/images}]
        domains:
          - {name: a, memory: 256MiB, disks: [{size: 1GiB, pool: imagse}, {size: 1GiB, pool: images}]}
          - {name: b, memory: 256MiB, disks: [{size: 1GiB}]}
        """})
    refs = [(r.kind, r.name, r.origin.line, r.hint) for r in desired.expected_on_host]
    assert refs == [("pool", "default", 4, ""),
                    ("pool", "imagse", 3, f"did you mean 'images', declared at {tmp_path}/a.yaml:1:9?")]
    out = run_cli("validate", str(tmp_path), check=0)
    assert "expected to exist on the host" in out.stdout and "pool 'imagse'" in out.stdout


def test_validate_json_is_a_documented_list(tmp_path):
    write(tmp_path / "a.yaml", "domains:\n  - {name: web01, memroy: 1GiB}\n")
    out = run_cli("validate", "-o", "json", str(tmp_path), check=1)
    doc = json.loads(out.stdout)
    assert doc["ok"] is False and doc["format_version"] == 1
    # the unknown field hides the missing memory it explains: one problem, one line
    assert [(d["file"], d["line"], d["column"], d["resource"], d["field"]) for d in doc["diagnostics"]] == [
        (f"{tmp_path}/a.yaml", 2, 19, "web01", "memroy")]
    assert doc["diagnostics"][0]["message"].startswith("unknown field 'memroy'; did you mean 'memory'?")


def test_plan_shows_expanded_names(tmp_path):
    write(tmp_path / "a.yaml", "project: td-exp\ndomains:\n  - {name: 'td-exp{index}', count: 2, memory: 128MiB}\n")
    out = run_cli("plan", str(tmp_path), uri="test:///default", check=0)
    assert "+ create domain td-exp1" in out.stdout and "+ create domain td-exp2" in out.stdout, out.stdout


# ------------------------------------------------------------------ the schema is the documentation

def walk(schema, path="#"):
    if isinstance(schema, dict):
        yield path, schema
        for key, sub in schema.items():
            if key in ("properties", "$defs"):
                for name, s in sub.items():
                    yield from walk(s, f"{path}/{key}/{name}")
            elif key in ("items", "additionalProperties", "propertyNames"):
                yield from walk(sub, f"{path}/{key}")
            elif key in ("oneOf", "anyOf", "allOf"):
                for i, s in enumerate(sub):
                    yield from walk(s, f"{path}/{key}/{i}")


def test_every_field_is_described_and_every_mapping_closed():
    schema = specs.load_schema()
    for path, sub in walk(schema):
        if path.split("/")[-2:-1] == ["properties"]:
            assert sub.get("description"), f"{path} has no description"
        if sub.get("type") == "object" and "properties" in sub:
            assert sub.get("additionalProperties") is False, f"{path} accepts unknown keys"
        if "format" in sub:
            assert sub["format"] in specs.FORMATS, f"{path}: no checker for format {sub['format']!r}"
            assert "pattern" in sub, f"{path}: editors need a pattern beside the format"


def test_reconcile_schema_prints_the_schema():
    out = run_cli("schema", check=0)
    assert json.loads(out.stdout) == json.loads((REPO / "schemas" / "spec.schema.json").read_text())


def test_readme_reference_is_generated_from_the_schema():
    readme = (REPO / "docs" / "reference.md").read_text()
    assert reference_markdown(specs.load_schema()) in readme, "docs/reference.md is out of date: run scripts/gen-reference"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gen-reference"), "--check"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_examples_validate_and_carry_the_schema_modeline():
    out = run_cli("validate", str(REPO / "specs"), check=0)
    assert "valid" in out.stdout
    for path in sorted((REPO / "specs").glob("*.yaml")):
        assert path.read_text().startswith("# yaml-language-server: $schema=../schemas/spec.schema.json\n"), path


def test_the_readme_example_spec_is_valid(tmp_path):
    readme = (REPO / "docs" / "specs.md").read_text()
    section = readme[readme.index("# Specs"):]
    example = section[section.index("```yaml\n") + 8:section.index("```\n", section.index("```yaml\n") + 8)]
    (tmp_path / "example.yaml").write_text(example)
    desired = specs.load([str(tmp_path)], resolve_secrets=False)  # as validate reads it: no LAB_PASS here
    assert [d.name for d in desired.domains] == ["web01", "node01", "node02", "node03"]


def test_anchors_live_under_x_keys_and_merges_keep_the_lines_of_what_they_override(tmp_path):
    out = problems(tmp_path, **{"a.yaml": """
        x-base: &base
          memory: 256MiB
          vcpus: 0
        domains:
          - <<: *base
            name: web01
            vcpus: 2
            memory: 100KiB
          - <<: *base
            name: web02
        """})
    assert [line.split(": ", 1)[0] + ": " + line.split(": ")[1] for line in out] == [
        "a.yaml:3:10: resource 'web02'", "a.yaml:8:13: resource 'web01'"]


@pytest.mark.parametrize("case", ["valid", "invalid"])
def test_json_output_follows_its_published_schema(tmp_path, case):
    import jsonschema

    schema = json.loads((REPO / "schemas" / "diagnostics.schema.json").read_text())
    write(tmp_path / "a.yaml", "domains: [{name: web01, memory: 256MiB, disks: [{size: 1GiB}]}]\n")
    if case == "invalid":
        write(tmp_path / "b.yaml", "domains: [{name: web01, memory: 512, vcpus: 0}]\n")
    out = run_cli("validate", "-o", "json", str(tmp_path), check=0 if case == "valid" else 1)
    doc = json.loads(out.stdout)
    jsonschema.Draft202012Validator(schema).validate(doc)
    assert doc["ok"] is (case == "valid")
    assert len(doc["diagnostics"]) == (0 if case == "valid" else 3)  # memory, vcpus, the name twice


def test_big_but_real_values_are_allowed(tmp_path):
    desired = load(tmp_path, **{"a.yaml": """
        domains:
          - {name: huge, memory: 1TiB, vcpus: 4096, disks: [{size: 16PiB}], stop_timeout: 3600}
        """})
    dom = desired.domains[0]
    assert (dom.memory, dom.vcpus, dom.disks[0].size) == (1024**3, 4096, 16 * 1024**5)
