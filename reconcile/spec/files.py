"""Which files a run reads, and reading one: bytes, UTF-8, YAML, with every problem located."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable

import yaml

from ..errors import Diagnostic, shown_path
from .source import SpecFile
from .yaml12 import _NULL, NodeReader, _Loader, _TooLarge

SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 10 * 1024 * 1024


def read_file(path: str, problems: list[Diagnostic]) -> SpecFile | None:
    """Parse one file; on a problem that leaves nothing to check, report it and return None."""
    spec = SpecFile(path, None)
    try:
        with open(path, "rb") as fp:  # a pipe given by name is read too, so only as far as the limit
            raw = fp.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        problems.append(Diagnostic(path, 0, 0, "", f"cannot read file: {exc.strerror or exc}"))
        return None
    if len(raw) > MAX_FILE_BYTES:
        problems.append(Diagnostic(path, 1, 1, "", f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; "
                                                   "expected a spec of ordinary size"))
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        hint = " (it looks like UTF-16)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        problems.append(Diagnostic(path, line, col, "", f"byte 0x{raw[exc.start]:02x} is not valid UTF-8{hint}; "
                                                        "expected the file saved as UTF-8"))
        return None
    loader = None
    try:
        loader = _Loader(text)  # checks for unprintable characters at once
        node = loader.get_single_node()
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL):
            problems.append(Diagnostic(path, 1, 1, "", "the file is empty; expected a mapping with 'domains' "
                                                       "and/or 'pools'"))
            return None
        builder = NodeReader(spec, problems)
        spec.data = builder.build(node, ())
        builder.finish()
    except _TooLarge as exc:
        mark = exc.node.start_mark
        problems.append(Diagnostic(path, mark.line + 1, mark.column + 1, "", exc.message))
        return None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        problems.append(Diagnostic(path, line, col, "", f"the character U+{exc.character:04X} is not allowed in "
                                                        "YAML; expected printable text"))
        return None
    except yaml.MarkedYAMLError as exc:
        problems.append(_syntax_problem(path, text, exc))
        return None
    except RecursionError:
        problems.append(Diagnostic(path, 1, 1, "", "values nest too deeply to read; expected a spec of ordinary "
                                                   "shape"))
        return None
    except yaml.YAMLError as exc:
        problems.append(Diagnostic(path, 1, 1, "", f"cannot read the YAML: {exc}"))
        return None
    finally:
        if loader is not None:
            loader.dispose()
    return spec


def _syntax_problem(path: str, text: str, exc: yaml.MarkedYAMLError) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = exc.problem or "invalid YAML"
    lines = text.split("\n")
    at = lines[mark.line][mark.column:mark.column + 1] if mark and mark.line < len(lines) else ""
    if at == "\t" or "'\\t'" in problem:
        what = "a tab character here; YAML indents and separates with spaces only, so replace the tab with spaces"
    elif "another document" in problem:
        what = "a second YAML document (---) starts here; expected one document per file, so split it into two files"
    elif "undefined alias" in problem or "undefined alias" in (exc.context or ""):
        name = re.match(r"\*([^\s,\]}]+)", lines[mark.line][mark.column:]) if mark and mark.line < len(lines) else None
        alias = f"*{name.group(1)}" if name else "this alias"
        what = f"{alias} refers to no anchor; expected &{alias.lstrip('*') if name else 'name'} defined earlier in the file"
    else:
        what = f"{exc.context}: {problem}" if exc.context else problem
        what = f"YAML syntax error: {what}"
    return Diagnostic(path, line, col, "", what)


def find_files(paths: Iterable[str]) -> tuple[list[str], list[Diagnostic]]:
    """The spec files of a run: those given, and every *.yaml / *.yml below a directory.

    Below a directory only regular files count: a FIFO named like a spec would block the
    read forever, a device would never end. A path given by name may also be a pipe (as
    `<(cat spec.yaml)` is), since then its writer is the user.
    """
    files: list[str] = []
    problems: list[Diagnostic] = []
    for p in paths:
        try:
            mode = os.stat(p).st_mode
        except OSError as exc:
            missing = isinstance(exc, FileNotFoundError)
            problems.append(Diagnostic(shown_path(p), 0, 0, "", "no such file or directory" if missing
                                       else f"cannot read: {exc.strerror or exc}"))
            continue
        if stat.S_ISDIR(mode):
            found: list[str] = []
            before = len(problems)
            for root, _dirs, names in os.walk(p):
                for name in names:
                    if not name.endswith(SUFFIXES) or name.startswith("."):
                        continue
                    full = os.path.join(root, name)
                    if os.path.isfile(full):
                        found.append(full)
                    else:
                        problems.append(Diagnostic(shown_path(full), 0, 0, "", "not a regular file (a pipe, device "
                                                   "or socket named like a spec); expected spec files only below "
                                                   "a directory"))
            if not found and len(problems) == before:
                problems.append(Diagnostic(shown_path(p), 0, 0, "", "directory holds no *.yaml or *.yml spec files"))
            files.extend(sorted(found))
        elif stat.S_ISREG(mode) or stat.S_ISFIFO(mode):
            files.append(p)
        else:
            problems.append(Diagnostic(shown_path(p), 0, 0, "", "not a regular file; expected a spec file, a "
                                                                "directory of them, or a pipe"))
    return list(dict.fromkeys(files)), problems
