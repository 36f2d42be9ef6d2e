"""export and import without a daemon: domain XML files read safely and located, what maps to
a spec and what is refused, and the command line on libvirt's in-process test driver."""

from __future__ import annotations

import json

import libvirt
import pytest
import yaml

from reconcile import spec as specs
from reconcile.cli.main import main
from reconcile.codec import domainfile
from reconcile.codec import export as exporter
from reconcile.errors import Diagnostic
from reconcile.model import Observed, ObservedDomain, ObservedPool, ObservedVolume, Ownership

from .test_drift import SEED_701


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


# --- reading a domain XML file -------------------------------------------------------------

def parsed(text: str) -> domainfile.DomainFile:
    doc = domainfile.parse("vm.xml", text.encode())
    assert isinstance(doc, domainfile.DomainFile), doc
    return doc


def test_elements_keep_their_line_and_column_and_namespaces_read_as_elementtree_does():
    doc = parsed("<domain type='kvm' xmlns:q='urn:q'>\n  <name>a</name>\n  <q:commandline/>\n</domain>")
    assert doc.at(doc.root.find("name")) == (2, 3)
    assert doc.root.find("{urn:q}commandline") is not None


@pytest.mark.parametrize("text, wanted", [
    ("<!DOCTYPE d [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;&a;'>]><domain>&b;</domain>", "a DOCTYPE"),
    ("<?xml version='1.0'?>\n<!DOCTYPE d SYSTEM 'file:///etc/passwd'><domain/>", "a DOCTYPE"),
    ("<domain><name>x</name>", "not well-formed: no element found"),
    ("", "not well-formed: no element found"),
])
def test_what_could_expand_or_read_another_file_is_refused_and_bad_xml_is_located(text, wanted):
    found = domainfile.parse("vm.xml", text.encode())
    assert isinstance(found, Diagnostic) and wanted in found.message and found.file == "vm.xml"


def test_the_seed_documents_own_typos_are_located():
    # As the article prints it: no space between `source` and `file`, nor between two attributes.
    text = ("<domain type='qemu'>\n<name>linux10.0421</name>\n<devices>\n<disk type='file' device='disk'>\n"
            "<sourcefile='/var/lib/libvirt/images/701.img'/>\n</disk>\n</devices>\n</domain>\n")
    found = domainfile.parse("701.xml", text.encode())
    assert isinstance(found, Diagnostic) and (found.line, found.column) == (5, 12)
    found = domainfile.parse("701.xml", b"<domain><graphics type='vnc' port='5901'listen='127.0.0.1'/></domain>")
    assert isinstance(found, Diagnostic) and found.line == 1 and "not well-formed" in found.message
    assert len(domainfile.parse("big.xml", b" " * (domainfile.MAX_XML_BYTES + 1)).message) > 0


# --- a domain file as spec data ------------------------------------------------------------

POOL_PATH = "/var/lib/libvirt/images/lab"


def host(*, attached=None, domains=()) -> Observed:
    volumes = {("lab", n): ObservedVolume("lab", n, 16 << 20, 16 << 20, fmt, f"{POOL_PATH}/{n}")
               for n, fmt in (("701.img", "raw"), ("data.qcow2", "qcow2"))}
    return Observed(uri="qemu:///system", pools={"lab": ObservedPool("lab", True, POOL_PATH)}, volumes=volumes,
                    attached=attached or {}, domains={
                        n: ObservedDomain(n, "u", False, {}, None) for n in domains})


SEED = SEED_701.format(name="linux10.0421", image=f"{POOL_PATH}/701.img").lstrip("\n")  # the seed document's VM


def imported(text: str, observed: Observed | None = None) -> domainfile.Imported:
    return domainfile.import_domain(parsed(text), observed or host())


def test_the_seed_documents_vm_maps_field_by_field_with_libvirts_buses():
    done = imported(SEED)
    assert done.problems == () and done.not_carried == ()
    assert done.exported.data == {
        "name": "linux10.0421", "type": "qemu", "arch": "i686", "machine": "pc", "memory": "500MiB", "vcpus": 1,
        "disks": [{"name": "701.img", "pool": "lab", "size": "16MiB", "format": "raw", "target": "hda", "bus": "ide"}],
        "cdroms": [{"path": "/usr/src/ubuntu-10.04-desktop-i386.iso", "target": "hdc", "bus": "ide"}],
        "interfaces": [], "boot": ["cdrom", "hd"], "graphics": {"type": "vnc", "listen": "127.0.0.1", "port": 5901},
        "autostart": False, "state": "stopped"}


def test_what_the_spec_leaves_to_libvirt_is_listed_but_not_what_libvirt_gives_anyway():
    text = SEED.replace("<uuid></uuid>", "<uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>\n"
                        "  <features><acpi/><apic/></features>\n  <clock offset='utc'/>\n"
                        "  <on_poweroff>destroy</on_poweroff>\n  <on_crash>restart</on_crash>\n"
                        "  <cpu mode='host-passthrough'/>")
    text = text.replace("<boot dev='hd'/>", "<boot dev='hd'/>\n    <loader readonly='yes' type='pflash'>/OVMF.fd</loader>")
    text = text.replace("</devices>", "  <sound model='ich9'/>\n  </devices>")
    done = imported(text)
    assert done.problems == ()
    assert [u.xml for u in done.not_carried] == [
        "<uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>", "<on_crash>restart</on_crash>",
        '<cpu mode="host-passthrough" />', '<loader readonly="yes" type="pflash">/OVMF.fd</loader>',
        '<sound model="ich9" />']


@pytest.mark.parametrize("change, line, field, wanted", [
    ((f"{POOL_PATH}/701.img", f"{POOL_PATH}/new.img"), 19, "disks[hda]",
     f"disk hda is {POOL_PATH}/new.img, in the directory of pool lab but not one of its volumes: if the file "
     "exists, `virsh pool-refresh lab` makes it one"),
    ((f"{POOL_PATH}/701.img", "/srv/vm/701.img"), 19, "disks[hda]",
     "disk hda is /srv/vm/701.img, which is in no storage pool (define a pool for its directory, e.g. under "
     "'pools', and import again)"),
    (("device='disk'", "device='floppy'"), 19, "disks[hda]", "a floppy drive; the spec language has disks and "
                                                             "cdroms only"),
    (("<memory>512000</memory>", "<memory>100000</memory>"), 4, "memory",
     "100000 KiB is not a whole number of MiB"),
    (("<memory>512000</memory>", "<memory>lots</memory>"), 4, "memory", "<memory> holds 'lots'"),
    (("<memory>512000</memory>", "<memory>5\u00b2</memory>"), 4, "memory", "<memory> holds '5\u00b2'"),
    (("<memory>512000</memory>", "<memory unit='furlong'>1</memory>"), 4, "memory", "unit 'furlong'"),
    (("<vcpu>1</vcpu>", "<vcpu current='x'>1</vcpu>"), 6, "vcpus", "current holds 'x'"),
    (("port='5901'", "port='59o1'"), 23, "graphics", "port '59o1'"),
    (("port='5901'", "port='5800'"), 23, "graphics", "graphics on port 5800"),
    (("arch='i686'", "arch='aarch64'"), 8, "arch", "arch 'aarch64'; the spec language has x86_64 and i686 only"),
    (("<source file='/usr/src/ubuntu-10.04-desktop-i386.iso'/>", ""), 14, "cdroms[hdc]", "cdrom drive hdc is empty"),
    (("<target dev='hdc'/>", "<target dev='hda'/>"), 19, "disks[hda]", "a second drive on target hda"),
    (("</devices>", "<interface type='bridge'><source bridge='br0'/></interface></devices>"), 24,
     "interfaces[0]", "interface 1 is not on a libvirt network"),
])
def test_what_cannot_be_said_or_would_lose_data_is_refused_at_its_line(change, line, field, wanted):
    done = imported(SEED.replace(*change))
    assert [(p.line, p.field) for p in done.problems if wanted in p.message] == [(line, field)], done.problems


def test_a_domain_already_there_or_a_volume_another_domain_has_is_refused():
    assert "is on qemu:///system already" in imported(SEED, host(domains=("linux10.0421",))).problems[0].message
    done = imported(SEED, host(attached={("lab", "701.img"): ("other",)}))
    assert [(p.line, p.message.split(";")[0]) for p in done.problems] == [
        (19, "disk hda is volume lab/701.img, which domain other has as a disk already")]
    assert imported("<network><name>n</name></network>").problems[0].message.startswith("the file holds <network>")
    assert "has no <name>" in imported("<domain type='kvm'/>").problems[0].message


def test_memory_in_libvirts_decimal_units_is_read_exactly():
    # 16384 MB is 16384 * 10**6 bytes: 15625 MiB exactly. 512000 KB (not KiB) is no whole MiB.
    done = imported(SEED.replace("<memory>512000</memory>", "<memory unit='MB'>16384</memory>"))
    assert done.problems == () and done.exported.data["memory"] == "15625MiB"
    assert done.exported.data["current_memory"] == "500MiB"
    done = imported(SEED.replace("<memory>512000</memory>", "<memory unit='KB'>512000</memory>"))
    assert [(p.field, p.message.split(",")[0]) for p in done.problems] == [
        ("memory", "512000 KB is not a whole number of MiB")]
    done = imported(SEED.replace("<memory>512000</memory>", "<memory unit='b'>1048577</memory>"))
    assert [p.message.split(",")[0] for p in done.problems] == ["1048577 b is not a whole number of MiB"]


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
    (["import"], "the following arguments are required: FILE"),
])
def test_usage_errors(argv, wanted, capsys):
    code, _, err = run(capsys, *argv)
    assert code == 1 and wanted in err


def test_import_reports_every_file_located_and_reads_no_host_when_none_parses(tmp_path, capsys):
    bad = tmp_path / "bad.xml"
    bad.write_text("<domain>\n<name>x</name>\n<oops>\n</domain>\n")
    code, out, err = run(capsys, "import", "-c", "qemu+tcp://nowhere.invalid/system", str(bad),
                         str(tmp_path / "missing.xml"))
    assert code == 1 and out == ""
    assert f"{bad}:4:3: the XML is not well-formed: mismatched tag" in err
    assert f"{tmp_path / 'missing.xml'}: cannot read file: No such file or directory" in err
    assert "2 problems in the domain XML files; no spec was printed." in err


def test_import_on_the_test_driver_gives_a_spec_that_plans_empty_once_applied(test_host, tmp_path, capsys):
    from reconcile import plan as planner
    from reconcile.apply.executor import execute
    from reconcile.host import LibvirtHost

    conn = libvirt.open(URI)
    vol = conn.storagePoolLookupByName("default-pool").createXML(
        "<volume><name>ie-imp.img</name><capacity unit='MiB'>8</capacity><target><format type='raw'/></target>"
        "</volume>", 0)
    xml = tmp_path / "ie-imp.xml"
    xml.write_text(f"<domain type='kvm'><name>ie-imp</name><memory unit='MiB'>64</memory><devices>"
                   f"<disk type='file' device='disk'><source file='{vol.path()}'/><target dev='vda'/></disk>"
                   "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng></devices></domain>")
    try:
        code, out, err = run(capsys, "import", "-c", URI, "--project", "ie", str(xml))
        assert code == 0, err
        assert out.startswith("project: ie\ndomains:\n# not carried over: <rng model=\"virtio\">")
        (tmp_path / "specs").mkdir()
        (tmp_path / "specs" / "ie.yaml").write_text(out)
        desired = specs.load([str(tmp_path / "specs")])
        h = LibvirtHost(URI)
        try:
            result = execute(planner.plan(desired, h.observe(volumes=None)), h, parallel=2)
            assert result.ok, result.results
            assert planner.plan(desired, h.observe(volumes=None)).empty
        finally:
            h.close()
    finally:
        try:
            conn.lookupByName("ie-imp").undefine()
        except libvirt.libvirtError:
            pass
        vol.delete(0)
        conn.close()


def test_what_the_spec_reader_would_refuse_is_never_printed(tmp_path, capsys):
    """The last word is the spec reader's: a name libvirt takes and a spec does not (a space)."""
    xml = tmp_path / "spaced.xml"
    xml.write_text("<domain type='kvm'>\n  <name>ie spaced</name>\n  <memory unit='MiB'>64</memory>\n</domain>\n")
    code, out, err = run(capsys, "import", "-c", URI, str(xml))
    assert code == 1 and out == ""
    assert f"{xml}:1:1: resource 'ie spaced': name: 'ie spaced' contains ' '; expected letters" in err
    assert "(so the spec language cannot say what the domain has)" in err
