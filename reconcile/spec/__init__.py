"""Reading specs: spec files into `Desired`, every problem located and reported together.

`files` (which files a run reads, and reading one), `yaml12` (a strict YAML 1.2 reader that
refuses every trap), `source` (a file's data with the position of every node), `schema`
and `quick_check` (the JSON Schema, and a quick yes/no before jsonschema is asked why),
`layers` (defaults, profiles and `count`), `build` (the model, with the checks that span
files), `domain` (one domain read into a `DomainSpec`), `cloud_init` (its seed composed),
`seen` (what the run has seen across files), `formats` (value formats with exact
messages), `paths` (walking data by field path), `dump` (YAML out), `reference` (the field
reference, from the schema). Nothing here talks to libvirt: specs are valid before the
host is looked at; the only I/O is reading the spec files and the files they name. This is
the only package that imports yaml and jsonschema. May import: `codec`, `model`, `errors`.
"""

from __future__ import annotations

from ..errors import SpecError
from .build import load
from .domain import REFERENCES
from .dump import Commented, dump, plain
from .files import find_files, read_file
from .formats import FORMATS
from .quick_check import compile_schema
from .schema import _quick_check, _validator, load_schema

__all__ = ["SpecError", "load", "load_schema", "dump", "Commented", "plain", "find_files", "read_file", "FORMATS", "REFERENCES",
           "compile_schema", "_quick_check", "_validator"]
