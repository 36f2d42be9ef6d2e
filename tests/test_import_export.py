"""export without a daemon: what it may write, and the command line on libvirt's in-process
test driver."""

from __future__ import annotations

import json

import libvirt
import pytest
import yaml

from reconcile import spec as specs
from reconcile.cli.main import main
from reconcile.codec import export as exporter
from reconcile.model import ObservedDomain, Ownership

def test_the_codecs_enums_are_the_schemas():
    schema = specs.load_schema()["$defs"]
    assert exporter.TYPES == tuple(schema["domain"]["properties"]["type"]["enum"])
    assert exporter.ARCHES == tuple(schema["domain"]["properties"]["arch"]["enum"])
    assert exporter.FORMATS == tuple(schema["disk"]["properties"]["format"]["enum"])
    assert exporter.DISK_BUSES == tuple(schema["disk"]["properties"]["bus"]["enum"])
    assert exporter.CDROM_BUSES == tuple(schema["cdrom"]["properties"]["bus"]["enum"])
    assert exporter.NIC_MODELS == tuple(schema["interface"]["properties"]["model"]["enum"])
    assert exporter.GRAPHICS == tuple(schema["graphics"]["properties"]["type"]["enum"])
    assert exporter.FIRST_PORT == schema["graphics"]["properties"]["port"]["oneOf"][0]["minimum"]


# --- the command line ---------------------------------------------------------------------

URI = "test:///default"


@pytest.fixture
def test_host():
    conn = libvirt.open(URI)  # the test driver's state is the process's: main() sees what is defined here
    pool = conn.storagePoolLookupByName("default-pool")
    made = []

    def define(name: str, disk: bool = True) -> None:
        devices = ""
        if disk:
            vol = pool.createXML(f"<volume><name>{name}.img</name><capacity unit='MiB'>8</capacity>"
                                 "<target><format type='raw'/></target></volume>", 0)
            devices = (f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{vol.path()}'/>"
                       "<target dev='vda' bus='virtio'/></disk>")
        conn.defineXML(f"<domain type='kvm'><name>{name}</name><memory unit='MiB'>64</memory>"
                       f"<os><type arch='x86_64'>hvm</type></os><devices>{devices}<sound model='ich9'/></devices>"
                       "</domain>")
        made.append(name)

    yield define
    for name in made:
        conn.lookupByName(name).undefine()
        try:
            pool.storageVolLookupByName(f"{name}.img").delete(0)
        except libvirt.libvirtError:
            pass
    conn.close()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_export_all_with_match_picks_by_shell_pattern_and_comments_what_it_does_not_model(test_host, capsys):
    test_host("ie-web01")
    test_host("ie-web02")
    test_host("ie-db01", disk=False)
    code, out, err = run(capsys, "export", "-c", URI, "--all", "--match", "ie-web*", "--match", "ie-db0?")
    assert code == 0, err
    doc = yaml.safe_load(out)
    assert [d["name"] for d in doc["domains"]] == ["ie-db01", "ie-web01", "ie-web02"]
    assert out.count('# not managed: <sound model="ich9" />\n') == 3
    code, out, err = run(capsys, "export", "-c", URI, "--all", "--match", "ie-WEB*", "-o", "json")
    assert code == 1 and json.loads(out)["error"]["message"].startswith(f"no domain on {URI} matches 'ie-WEB*'")
    code, out, _ = run(capsys, "export", "-c", URI, "-o", "json", "--all", "--match", "ie-web01")
    assert code == 0 and json.loads(out)["x-not-managed"] == {"ie-web01": ['<sound model="ich9" />']}
    # --all is every domain: the test driver's own `test` (of type test, on a file in no
    # pool) cannot be said, and says so, with nothing printed.
    code, out, err = run(capsys, "export", "-c", URI, "--all")
    assert code == 1 and out == ""
    assert f"{URI}: resource 'test': type: type 'test'; the spec language has kvm and qemu only" in err
    assert "problems in the domains on test:///default; no spec was printed." in err


def test_export_all_leaves_out_the_domains_of_other_projects(test_host, capsys, monkeypatch):
    from reconcile.cli import adopt

    test_host("ie-mine")
    test_host("ie-theirs")
    real = adopt._observe

    def observed(args):
        o = real(args)
        theirs = o.domains["ie-theirs"]
        o.domains["ie-theirs"] = ObservedDomain(theirs.name, theirs.uuid, theirs.running, theirs.essence,
                                                Ownership(project="elsewhere"), unmodeled=theirs.unmodeled)
        return o

    monkeypatch.setattr(adopt, "_observe", observed)
    code, out, err = run(capsys, "export", "-c", URI, "--project", "mine", "--all", "--match", "ie-*")
    assert code == 0 and [d["name"] for d in yaml.safe_load(out)["domains"]] == ["ie-mine"]
    assert "left out, managed by a project other than mine: ie-theirs (elsewhere); their specs are" in err


@pytest.mark.parametrize("argv, wanted", [
    (["export"], "expected the names of domains, or --all"),
    (["export", "--all", "web01"], "--all exports every domain; name domains or give --all, not both"),
    (["export", "--match", "web*", "web01"], "--match picks among every domain: add --all"),
])
def test_usage_errors(argv, wanted, capsys):
    code, _, err = run(capsys, *argv)
    assert code == 1 and wanted in err
