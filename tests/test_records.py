"""reconcile's records in the pools and networks it makes, both ways, and what the scan of
other domains' XML finds of their interfaces. Pure: no libvirt."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from reconcile.codec import domain as domxml
from reconcile.codec import network as netxml
from reconcile.codec import storage
from reconcile.model import NetworkSpec, Origin, PoolOwner

# What libvirt 9.0 gives back for a dir pool reconcile defined (pool-dumpxml), running.
LIBVIRT_POOL = """<pool type='dir'>
  <name>lab</name>
  <uuid>19c0bf3f-491a-4c95-bb7f-288c6aba8600</uuid>
  <capacity unit='bytes'>270553174016</capacity>
  <allocation unit='bytes'>23831633920</allocation>
  <available unit='bytes'>246721540096</available>
  <source>
    <vendor name='http://reconcile.dev/xmlns/pool/1'/>
    <product name='project=tour spec=/srv/my%20lab/pool.yaml directory=found'/>
  </source>
  <target>
    <path>/srv/lab</path>
    <permissions><mode>0711</mode><owner>0</owner><group>0</group></permissions>
  </target>
</pool>"""


def test_a_pool_record_reads_back_as_written():
    owner = PoolOwner("tour", "/srv/my lab/pool.yaml", made_directory=True)
    xml = storage.pool_xml("lab", "/srv/lab", owner)
    assert storage.pool_owner(xml) == owner
    assert storage.pool_path(xml) == "/srv/lab"
    assert storage.pool_owner(storage.pool_xml("lab", "/srv/lab")) is None


def test_the_record_is_read_from_libvirts_own_xml_and_rewritten_keeping_the_rest():
    assert storage.pool_owner(LIBVIRT_POOL) == PoolOwner("tour", "/srv/my lab/pool.yaml", False)
    made = storage.with_owner(LIBVIRT_POOL, PoolOwner("tour", "/srv/my lab/pool.yaml", True))
    assert storage.pool_owner(made).made_directory
    root = ET.fromstring(made)
    assert root.findtext("uuid") == "19c0bf3f-491a-4c95-bb7f-288c6aba8600"  # the same pool, defined again
    assert root.findtext("target/permissions/mode") == "0711"
    assert len(root.findall("source/vendor")) == len(root.findall("source/product")) == 1


def test_a_record_that_is_not_reconciles_is_no_record():
    other = LIBVIRT_POOL.replace("http://reconcile.dev/xmlns/pool/1", "ACME")
    assert storage.pool_owner(other) is None
    assert storage.pool_owner(LIBVIRT_POOL.replace("directory=found", "directory=maybe")) is None
    assert storage.pool_owner(LIBVIRT_POOL.replace("project=tour ", "")) is None
    assert storage.pool_owner("") is None


def test_a_network_records_its_project_and_the_absolute_spec_file():
    net = NetworkSpec("labnet", Origin("specs/net.yaml"))
    xml = netxml.network_xml(net, "tour", (), "/srv/specs/net.yaml")
    assert netxml.owner_of(xml) == ("tour", "/srv/specs/net.yaml")
    assert netxml.owner_project(xml) == "tour"
    assert netxml.owner_of("<network><name>default</name></network>") == (None, "")


def test_interfaces_are_found_by_network_and_by_bridge():
    xml = """<domain type='kvm'><name>x</name><devices>
      <interface type='network'><mac address='52:54:00:00:00:01'/><source network='lab&amp;co' portid='a' bridge='virbr3'/></interface>
      <interface type='bridge'><source bridge='br0'/></interface>
      <interface type='user'><source/></interface>
      <disk type='file' device='disk'><source file='/x'/></disk>
    </devices></domain>"""
    assert domxml.interface_sources(xml) == ({"lab&co"}, {"br0"})
