"""reconcile: keep libvirt hosts in the state a directory of YAML specs describes.

The folder tree is the flow, and imports point one way (tests/test_layering.py checks it):

    cli -> spec, host, plan, apply -> codec -> model -> errors

`spec` reads the specs into `model.Desired`; `host` (the only importer of libvirt) reads
the host into `model.Observed` and offers the primitives; `plan` compares the two, purely,
into a `model.Plan`; `apply` carries the plan out through the host; `codec` converts both
ways between the model and libvirt's XML and files; `cli` is the only package that prints
or exits.
"""
