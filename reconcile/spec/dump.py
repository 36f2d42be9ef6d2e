"""Spec data back to YAML text, as `export` prints it."""

from __future__ import annotations

from typing import Any

import yaml


def dump(doc: dict[str, Any]) -> str:
    """A spec document as YAML, keys in the order given (export writes them as a person would)."""
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)
