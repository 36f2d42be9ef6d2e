"""Property: whatever bytes a spec file holds, loading ends in a model or in located diagnostics.

Random YAML documents, random text, and random mutations of a valid spec (edits to its text
and to its data) are fed to the loader. Anything but `Desired` or a `SpecError` whose every
diagnostic names the file, a line and a column is a failure; so is a valid model whose
domain XML does not carry exactly the names the spec gave (no markup gets in), and so is a
yes from the quick schema check to a document jsonschema rejects.
"""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconcile.codec import domain as domxml
from reconcile import spec as specs
from reconcile.errors import SpecError
from reconcile.model import Desired, Ownership

VALID = """\
project: prop
pools:
  - name: images
    path: /srv/images
profiles:
  small: {memory: 256MiB, vcpus: 1}
defaults:
  graphics: {type: vnc, listen: 127.0.0.1, port: auto}
domains:
  - name: web01
    memory: 512MiB
    current_memory: 256MiB
    vcpus: 2
    boot: [cdrom, hd]
    disks:
      - {size: 1GiB, pool: images, bus: sata}
      - {size: 2GiB, format: raw, keep: true, name: data.img}
    cdroms:
      - {path: /srv/iso/debian.iso, target: sdc}
    autostart: true
    stop_timeout: 10
  - name: node{index:02}
    count: 2
    profile: small
    disks: [{size: 1GiB}]
    state: stopped
"""

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(text: str | bytes, extra: dict[str, str] | None = None) -> Desired | None:
    """Load `text` as a spec file; assert the only outcomes are a model or located diagnostics."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        files = {str(path)}
        for name, content in (extra or {}).items():
            (Path(tmp) / name).write_text(content)
            files.add(str(Path(tmp) / name))
        parsed = specs.read_file(str(path), [])
        if parsed is not None and specs._quick_check()(parsed.data):
            # the quick schema check's yes skips jsonschema: it must never be wrong
            assert specs._validator().is_valid(parsed.data), parsed.data
        try:
            desired = specs.load([tmp])
        except SpecError as exc:
            assert exc.diagnostics
            for d in exc.diagnostics:
                assert d.file in files, d
                assert d.line >= 1 and d.column >= 1, d
                assert d.message and "\n" not in str(d), d
            return None
    for dom in desired.domains:
        root = ET.fromstring(domxml.domain_xml(dom, Ownership(project=desired.project)))
        assert root.findtext("name") == dom.name
        assert [d.get("file") for d in root.iter("source") if d.get("file")] == [c.path for c in dom.cdroms]
    return desired


def test_the_valid_spec_is_valid():
    desired = check(VALID)
    assert desired is not None
    assert [d.name for d in desired.domains] == ["web01", "node01", "node02"]


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.sampled_from(["yes", "no", "on", "0755", "1e3", "512MiB", "1TiB", "10", "-1GiB", "web01", "{index}",
                     "vda", "hd", "cdrom", "auto", "5901", "/srv/a.iso", "../x", "a/b", "<x/>", "&amp;"]),
)
keys = st.one_of(st.text(max_size=12), st.sampled_from(
    ["project", "domains", "pools", "profiles", "defaults", "name", "memory", "current_memory", "vcpus", "disks",
     "cdroms", "boot", "size", "pool", "target", "bus", "format", "path", "graphics", "port", "listen", "count",
     "profile", "state", "autostart", "keep", "stop_timeout", "type", "arch", "machine"]))
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(keys, inner, max_size=5)), max_leaves=25)


@SETTINGS
@given(documents, st.sampled_from([None, "flow", "block"]))
def test_random_documents(doc, style):
    text = yaml.safe_dump(doc, default_flow_style={None: None, "flow": True, "block": False}[style],
                          allow_unicode=True)
    check(text)


@SETTINGS
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_random_text_and_bytes(text):
    check(text)


@st.composite
def text_mutations(draw):
    text = VALID
    for _ in range(draw(st.integers(1, 4))):
        lines = text.splitlines(keepends=True)
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "replace", "truncate", "indent"]))
        i = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if not lines:
            break
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "indent":
            lines[i] = draw(st.sampled_from([" ", "  ", "\t", ""])) + lines[i].lstrip(" ")
        else:
            pos = draw(st.integers(0, len(lines[i])))
            chunk = draw(st.one_of(st.text(max_size=6), st.sampled_from(
                [":", "- ", "&a ", "*a", "<<: *a", "{", "]", "'", '"', "#", "!!str ", "!!python/none ", "\t", "0"])))
            if op == "insert":
                lines[i] = lines[i][:pos] + chunk + lines[i][pos:]
            elif op == "replace":
                lines[i] = lines[i][:pos] + chunk + lines[i][pos + len(chunk):]
            else:
                lines = lines[:i] + [lines[i][:pos]]
        text = "".join(lines)
    return text


@SETTINGS
@given(text_mutations())
def test_mutated_text_of_a_valid_spec(text):
    check(text)


@st.composite
def data_mutations(draw):
    data = yaml.safe_load(VALID)
    for _ in range(draw(st.integers(1, 3))):
        # walk to a random mapping or list inside the document
        node, path = data, []
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
            if not isinstance(node[key], (dict, list)):
                break
            node, path = node[key], path + [key]
        op = draw(st.sampled_from(["set", "delete", "add"]))
        if isinstance(node, dict):
            if op == "delete" and node:
                del node[draw(st.sampled_from(sorted(node)))]
            elif op == "set" and node:
                node[draw(st.sampled_from(sorted(node)))] = draw(documents)
            else:
                node[draw(keys)] = draw(documents)
        elif isinstance(node, list):
            if op == "delete" and node:
                node.pop(draw(st.integers(0, len(node) - 1)))
            elif op == "set" and node:
                node[draw(st.integers(0, len(node) - 1))] = draw(documents)
            else:
                node.append(draw(documents))
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@SETTINGS
@given(data_mutations())
def test_mutated_data_of_a_valid_spec(text):
    check(text)


@SETTINGS
@given(data_mutations(), data_mutations())
def test_two_mutated_files_in_one_directory(a, b):
    """Cross-file checks (names, profiles, projects) hold up too."""
    check(a, extra={"other.yaml": b.replace("web01", "web02")})

