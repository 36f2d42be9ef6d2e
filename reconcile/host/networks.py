"""Networks on the host: created, started and marked autostart when missing."""

from __future__ import annotations

import libvirt

from .connection import Connection
from .errors import lookup, wrapped


class Networks(Connection):

    def ensure_network(self, name: str, xml: str) -> bool:
        """Define (if missing), start and mark autostart a network; False if it was all done."""
        changed = False
        net = lookup(lambda: self.conn.networkLookupByName(name), libvirt.VIR_ERR_NO_NETWORK, f"look up network {name}")
        if net is None:
            with wrapped(f"define network {name}"):
                net = self.conn.networkDefineXML(xml)
            changed = True
        with wrapped(f"start network {name}"):
            if not net.isActive():
                net.create()
                changed = True
            if not net.autostart():
                net.setAutostart(1)
                changed = True
        return changed
