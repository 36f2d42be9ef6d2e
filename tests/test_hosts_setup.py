"""The hosts of the multi-host tests are three daemons, not one under three URIs: a domain
defined on rchost1's session is there, and neither on rchost2's session nor on qemu:///system."""

from __future__ import annotations

import uuid

import libvirt
import pytest

from .conftest import PREFIX, cleanup_host

pytestmark = pytest.mark.libvirtd


def names(conn) -> set[str]:
    return {d.name() for d in conn.listAllDomains(0)}


def test_a_domain_defined_on_one_host_is_on_that_host_only(remote_hosts, system_conn):
    name = f"{PREFIX}hosts-{uuid.uuid4().hex[:6]}"
    first, second = (libvirt.open(uri) for uri in remote_hosts.uris)
    try:
        # type qemu: only defined, never started, so it needs no /dev/kvm
        first.defineXML(f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
                        "<os><type arch='x86_64'>hvm</type></os></domain>")
        again = libvirt.open(remote_hosts.uris[0])  # the daemon holds it, not this connection
        try:
            assert name in names(again)
        finally:
            again.close()
        assert name not in names(second)
        assert name not in names(system_conn)
    finally:
        cleanup_host(first, prefix=name)
        first.close()
        second.close()
