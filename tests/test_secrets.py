"""Secrets in cloud-init files, fast: `{env: NAME}` and `{file: PATH}` reach the seed, are
checked for form by validate without being read, are named (never shown) when missing, and
appear in no output or plan file. The seed volume's permissions are checked with a booting
guest in tests/test_guest.py."""

from __future__ import annotations

import json

import pytest

from reconcile import spec as specs
from reconcile.errors import SpecError

from .conftest import run_cli, write

SECRET = "s3cr3t-value-9f1c"


def _spec(tmp_path, user_data: str, extra: str = "") -> None:
    write(tmp_path / "specs" / "vm.yaml", f"""
        project: rcsecrets
        domains:
          - name: rctest-secret-vm
            memory: 64MiB
            cloud_init:
              pool: default-pool  # the test driver's
              user_data: {user_data}
        {extra}""")


def _files(desired) -> dict[str, bytes]:
    return dict(desired.domains[0].seed.files)


def test_env_and_file_references_reach_the_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("RCTEST_PASS", SECRET)
    write(tmp_path / "secrets" / "key", "ssh-ed25519 AAAAfromafile\n")
    write(tmp_path / "specs" / "vm.yaml", """
        domains:
          - name: rctest-secret-vm
            memory: 64MiB
            cloud_init:
              user_data:
                password: {env: RCTEST_PASS}
                users: [{name: lab, ssh_authorized_keys: [{file: ../secrets/key}]}]
              network_config: {file: ../secrets/net.yaml}
        """)
    write(tmp_path / "secrets" / "net.yaml", "version: 2\nethernets: {eth0: {dhcp4: true}}\n")
    files = _files(specs.load([str(tmp_path / "specs")]))
    assert f"password: {SECRET}".encode() in files["user-data"]
    assert b"- ssh-ed25519 AAAAfromafile\n" in files["user-data"]  # a file's one line, without its newline
    assert files["network-config"] == (tmp_path / "secrets" / "net.yaml").read_bytes()  # a whole file, as it is


def test_validate_checks_the_form_without_reading(tmp_path, monkeypatch):
    monkeypatch.delenv("RCTEST_PASS", raising=False)
    _spec(tmp_path, "{password: {env: RCTEST_PASS}}")
    run_cli("validate", str(tmp_path / "specs"), check=0)
    _spec(tmp_path, "{password: {env: 5}}")
    bad = run_cli("validate", str(tmp_path / "specs"))
    assert bad.returncode == 1
    assert "cloud_init.user_data.password: env: expected the name of an environment variable as a string" in bad.stderr


@pytest.mark.parametrize("reference, expected", [
    ("{env: RCTEST_NOT_SET}", "the environment variable RCTEST_NOT_SET is not set"),
    ("{file: /nonexistent/secret}", "cannot read the secret file /nonexistent/secret: No such file or directory"),
])
def test_a_missing_secret_is_named_with_its_place(tmp_path, monkeypatch, reference, expected):
    monkeypatch.delenv("RCTEST_NOT_SET", raising=False)
    _spec(tmp_path, f"{{password: {reference}}}")
    with pytest.raises(SpecError) as caught:
        specs.load([str(tmp_path / "specs")])
    (diag,) = caught.value.diagnostics
    assert expected in diag.message
    assert (diag.file, diag.line, diag.field) == (str(tmp_path / "specs" / "vm.yaml"), 7, "cloud_init.user_data.password")
    out = run_cli("plan", "-c", "test:///default", str(tmp_path / "specs"))
    assert out.returncode == 1 and expected in out.stderr and "Traceback" not in out.stderr


def test_a_secret_is_in_no_output_and_no_plan_file(tmp_path):
    _spec(tmp_path, "{password: {env: RCTEST_PASS}}")
    env = {"RCTEST_PASS": SECRET}
    seen = []
    # (apply with a seed needs a real daemon: the test driver cannot upload; see test_guest.py)
    for args in (("plan",), ("plan", "-o", "json"), ("plan", "-v"), ("validate",)):
        proc = run_cli(*args, "-c", "test:///default", str(tmp_path / "specs"), env=env)
        assert proc.returncode == 0, proc.stderr
        seen.append(proc.stdout + proc.stderr)
    run_cli("plan", "-c", "test:///default", "--out", str(tmp_path / "p.json"), str(tmp_path / "specs"), env=env,
            check=0)
    seen.append((tmp_path / "p.json").read_text())
    assert json.loads(seen[1])["actions"]  # the plan did show the seed, as hashes
    assert not [text for text in seen if SECRET in text]
    # a secret meta-data that is not YAML is refused without its words
    write(tmp_path / "meta", f"{SECRET}: [unclosed\n")
    write(tmp_path / "specs" / "vm.yaml", f"""
        domains:
          - name: rctest-secret-vm
            memory: 64MiB
            cloud_init: {{pool: default-pool, meta_data: {{file: {tmp_path / 'meta'}}}}}
        """)
    bad = run_cli("plan", "-c", "test:///default", str(tmp_path / "specs"))
    assert bad.returncode == 1 and "the secret is not valid YAML" in bad.stderr
    assert SECRET not in bad.stdout + bad.stderr


def test_what_holds_a_secret_is_shown_by_a_slow_hash_that_no_guess_is_cheap_against(tmp_path):
    """A short password in an otherwise known user-data could be found from a SHA-256 of the
    file by hashing guesses; what plans, plan files and libvirt's metadata carry of a seed
    with a secret is a salted scrypt instead, and no fast hash of its content appears."""
    import hashlib

    from reconcile.model import protected_digest

    _spec(tmp_path, "{password: {env: RCTEST_PASS}}")
    env = {"RCTEST_PASS": "hunter2"}
    done = run_cli("plan", "-c", "test:///default", "-o", "json", "--out", str(tmp_path / "p.json"),
                   str(tmp_path / "specs"), env=env, check=0)
    seed = next(a for a in json.loads(done.stdout)["actions"] if a["name"].endswith("-cidata.iso"))
    shown = {c["path"]: c["after"] for c in seed["changes"]}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RCTEST_PASS", "hunter2")
        desired = specs.load([str(tmp_path / "specs")])
    files = _files(desired)
    assert shown["user-data"] == protected_digest(files["user-data"])
    assert shown["meta-data"].startswith("sha256:")  # meta-data holds no secret here
    everything = done.stdout + done.stderr + (tmp_path / "p.json").read_text()
    fast = hashlib.sha256(files["user-data"]).hexdigest()
    assert fast[:12] not in everything
    # the instance-id and the seed's digest (both recorded in the domain's metadata) are
    # not a fast hash of the secret content either: a changed password changes both
    seed_spec = desired.domains[0].seed
    assert fast[:12] not in seed_spec.instance_id
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RCTEST_PASS", "hunter3")
        other = specs.load([str(tmp_path / "specs")]).domains[0].seed
    assert other.instance_id != seed_spec.instance_id and other.digest != seed_spec.digest
