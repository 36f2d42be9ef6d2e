"""Bad input never costs data: one invalid file among valid ones, and nothing on the host moves."""

from __future__ import annotations

import pytest

from .conftest import DOMAIN_TYPE

pytestmark = pytest.mark.libvirtd


def test_one_invalid_file_stops_every_command_before_the_host(lab):
    lab.spec("good.yaml", f"""
        domains:
          - name: {lab.dom('good')}
            type: {DOMAIN_TYPE}
            memory: 64MiB
            state: stopped
        """)
    lab.cli("apply", check=0)
    before = lab.conn.lookupByName(lab.dom("good")).XMLDesc(0)
    # the good domain would change and new ones would appear, but another file is invalid
    copies = lab.dom("new") + "{index}"
    lab.spec("good.yaml", f"""
        domains:
          - name: {lab.dom('good')}
            type: {DOMAIN_TYPE}
            memory: 128MiB
            state: absent
          - name: {copies}
            count: 2
            type: {DOMAIN_TYPE}
            memory: 64MiB
        """)
    bad = lab.spec("bad.yaml", """
        domains:
          - name: typo
            memory: 64MiB
            autostart: yes
        """)
    for command in ("validate", "plan", "apply", "destroy"):
        out = lab.cli(command)
        assert out.returncode == 1, out
        assert "Traceback" not in out.stderr
        assert f"{bad}:4:16: resource 'typo': autostart: 'yes' is the boolean true in YAML 1.1" in out.stderr
        assert out.stderr.rstrip().endswith("1 problem in the specs; nothing was changed on the host.")
    assert lab.domain_names() == {lab.dom("good")}
    assert lab.conn.lookupByName(lab.dom("good")).XMLDesc(0) == before
