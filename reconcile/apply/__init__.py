"""Carrying out a plan: the executor (dependency order, bounded parallelism, partial
results), one runner per kind of action, the run lock protocol, and image sources.

The only stage besides the command line that causes effects, always through an object that
satisfies the `Host` protocol (the libvirt adapter in `host`, or a test's stand-in), never
by importing libvirt. May import: `codec`, `model`, `errors`.
"""
