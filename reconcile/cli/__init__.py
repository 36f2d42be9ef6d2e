"""The command line: argument parsing (`parser`), what a run shows while it works
(`output`), running a command (`main`), and plans, results and diagnostics as text or
JSON (`render`). The only package that prints or exits. May import: `apply`, `host`, `plan`,
`spec`, `codec`, `model`, `errors`.
"""

from .main import main

__all__ = ["main"]
