"""The spec schema (schemas/spec.schema.json): loading it, and checking a file against it,
with messages that say what was expected where.

A file with nothing wrong passes the quick check (`quick_check`) and never reaches
jsonschema, which is imported only for a file with problems (it is a third of the start-up
time), to find out what they are.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import Diagnostic
from .formats import FORMATS, closest
from .quick_check import ANNOTATIONS, compile_schema
from .source import Path_, SpecFile

if TYPE_CHECKING:
    import jsonschema  # imported where a file has problems: it is a third of the start-up time

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
SPEC_SCHEMA = SCHEMA_DIR / "spec.schema.json"


@functools.lru_cache(maxsize=1)
def _schema_text() -> str:
    return SPEC_SCHEMA.read_text(encoding="utf-8")


def load_schema() -> dict[str, Any]:
    return json.loads(_schema_text())


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = load_schema()
    checker = jsonschema.FormatChecker(formats=())
    for name, func in FORMATS.items():
        checker.checks(name, raises=ValueError)(_returns_true(func))
    cls = jsonschema.validators.extend(jsonschema.validators.validator_for(schema), {"pattern": _pattern})
    return cls(_inline_refs(schema), format_checker=checker)


@functools.lru_cache(maxsize=1)
def domain_fields() -> frozenset[str]:
    return frozenset(load_schema()["$defs"]["domain"]["properties"])


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with each local `$ref` replaced by what it points to (`$defs` stay).

    Resolving references is a third of the validation time of a large spec directory;
    resolving them once up front gives the same verdicts. A reference with keywords other
    than annotations beside it, or one that recurses, is left for jsonschema to follow.
    """
    defs = schema.get("$defs", {})

    def walk(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/") and set(node) - {"$ref"} <= ANNOTATIONS:
                name = ref[len("#/$defs/"):]
                if isinstance(defs.get(name), dict) and name not in seen:
                    # the target's own annotations win: they are what jsonschema reports
                    return walk({k: v for k, v in node.items() if k != "$ref"} | defs[name], seen + (name,))
            return {k: walk(v, seen) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, seen) for v in node]
        return node

    return walk(schema, ())


@functools.lru_cache(maxsize=256)
def _ecma(pattern: str) -> re.Pattern[str]:
    # In JSON Schema (ECMA 262) `$` is the end of the text; in Python it also matches before
    # a final newline, which would let "web01\n" pass as a name.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Any:
    if isinstance(instance, str) and not _ecma(pattern).search(instance):
        import jsonschema

        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _returns_true(func: Callable[[str], None]) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        if isinstance(value, str):
            func(value)
        return True
    return check


@functools.lru_cache(maxsize=1)
def _quick_check() -> Callable[[Any], bool]:
    return compile_schema(load_schema(), FORMATS, _ecma)


def _schema_problems(spec: SpecFile) -> list[Diagnostic]:
    if _quick_check()(spec.data):
        return []  # nothing wrong: no need for jsonschema's reasons
    import jsonschema

    out: dict[tuple[Path_, str], Diagnostic] = {}
    by_path: dict[Path_, list[jsonschema.ValidationError]] = {}
    for error in _validator().iter_errors(spec.data):
        # oneOf/anyOf with a description of its own says more than the alternative that came closest
        described = error.validator in ("oneOf", "anyOf") and isinstance(error.schema, dict) \
            and "description" in error.schema
        best = error if described else jsonschema.exceptions.best_match([error])
        by_path.setdefault(tuple(best.absolute_path), []).append(best)
    for path, errors in by_path.items():
        if any(path[: len(b)] == b for b in spec.bad):
            continue  # the YAML reading already said what is wrong here
        # a format check says more than the pattern that mirrors it for editors
        if any(e.validator == "format" for e in errors):
            errors = [e for e in errors if e.validator != "pattern"]
        for error in errors:
            for where, message in _schema_messages(error):
                full = path + where
                out.setdefault((full, message), spec.diag(full, message, at_key=message.startswith("unknown field")))
    for full, _ in out:
        spec.bad.add(full)
    return list(out.values())


def _schema_messages(error: jsonschema.ValidationError) -> list[tuple[Path_, str]]:
    """What is wrong and what was expected, relative to the error's path."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    desc = schema.get("description", "")
    instance = error.instance
    v = error.validator
    if v == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(schema.get("properties", {}))
        out = []
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        for key in instance:
            if key in allowed or any(p.search(str(key)) for p in patterns):
                continue
            close = closest(key, allowed)
            hint = f"did you mean {close!r}? " if close else ""
            extra = " (or x-NAME for anchors)" if "^x-" in schema.get("patternProperties", {}) else ""
            out.append(((key,), f"unknown field {key!r}; {hint}expected one of: {', '.join(allowed)}{extra}"))
        return out or [((), error.message)]
    if v == "required":
        return [((), f"missing required field {_missing(error)!r}")]
    if v == "format" and error.cause is not None:
        return [((), str(error.cause))]
    if v == "type" and schema.get("format") == "size" and isinstance(instance, (int, float)) \
            and not isinstance(instance, bool):
        return [((), f"{_show(instance)} has no unit; expected a size such as {instance}MiB or {instance}GiB "
                     "(a bare number could mean bytes, KiB or MiB)")]
    if v == "type":
        scalar = error.validator_value not in ("object", "array")
        what = "nothing is given" if instance is None else f"{_show(instance)} is {_kind(instance)}"
        return [((), f"{what}; expected {_article(error.validator_value)}"
                 + (f": {_lower(desc)}" if desc and scalar else ""))]
    if v == "enum":
        choices = [str(c) for c in error.validator_value]
        close = closest(instance, choices, cutoff=0.5)
        hint = f" (did you mean {close!r}?)" if close and isinstance(instance, str) else ""
        return [((), f"{_show(instance)} is not allowed{hint}; expected one of: {', '.join(choices)}")]
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = "less than the minimum" if "inimum" in v else "more than the maximum"
        return [((), f"{_show(instance)} is {word} {error.validator_value}"
                 + (f"; expected {_lower(desc)}" if desc else ""))]
    if v == "uniqueItems" and isinstance(instance, list):
        seen: set[str] = set()
        for i, item in enumerate(instance):
            if repr(item) in seen:
                return [((i,), f"{_show(item)} is listed twice; expected each at most once")]
            seen.add(repr(item))
    if v == "minItems":
        return [((), f"the list is empty; expected at least {error.validator_value} item")]
    if v in ("oneOf", "anyOf"):
        return [((), f"{_show(instance)} is not valid; expected {_lower(desc) or 'a value the schema allows'}")]
    if v == "pattern" and isinstance(instance, str):
        return [((), f"{_show(instance)} is not valid; expected {_lower(desc)}" if desc else error.message)]
    if v == "const":
        return [((), f"{_show(instance)} is not allowed; expected {error.validator_value!r}")]
    return [((), error.message + (f"; expected {_lower(desc)}" if desc else ""))]


def _missing(error: jsonschema.ValidationError) -> str:
    match = re.match(r"'(.*)' is a required property", error.message)
    return match.group(1) if match else str(error.validator_value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _lower(text: str) -> str:
    """A description inside a sentence: 'Number of CPUs.' -> 'number of CPUs' (but 'TCP' stays)."""
    text = text.split(" Default:")[0]  # what the field is, not what it is when left out
    if text[:2].istitle() or len(text) < 2:
        text = text[:1].lower() + text[1:]
    return text.rstrip(".")


def _article(json_type: object) -> str:
    names = {"string": "a string", "integer": "a whole number", "number": "a number", "boolean": "true or false",
             "object": "a mapping", "array": "a list", "null": "nothing"}
    if isinstance(json_type, list):
        return " or ".join(names.get(t, t) for t in json_type)
    return names.get(str(json_type), str(json_type))


def _kind(value: Any) -> str:
    return {list: "a list", dict: "a mapping", str: "a string", int: "a whole number", float: "a number",
            bool: "a boolean", type(None): "empty"}.get(type(value), type(value).__name__)
