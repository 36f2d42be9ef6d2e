"""Pure converters both sides of the flow use: the desired state into libvirt's XML and
files, and what libvirt returns back into the model's shapes.

`domain` and `network` (XML both ways), `storage` (pool and volume XML), `lock` (the run
lock's network), `seed` (cloud-init NoCloud ISOs), `imagehead` (what an image's first bytes
say), `devices` (which devices of a domain no spec field describes), `export` (domains as
spec data), `domainfile` (a domain XML file, read safely, as spec data). No I/O: nothing here opens a file, a socket or a connection. May import:
`model`, `errors`.
"""
