"""Payloads (request bodies, journal entries, state, stored rows) are only ever decoded as data: JSON or
msgpack through msgspec/orjson/pydantic. Nothing in the engine unpickles, unmarshals or evaluates them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "unbroken"

FORBIDDEN_TEXT = re.compile(
    r"\bpickle\b|\bcPickle\b|\bmarshal\b|\bshelve\b|\bdill\b|(?<![\w.])eval\(|(?<![\w.])exec\("
)
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def _sources() -> list[Path]:
    paths = sorted(SRC.rglob("*.py"))
    assert len(paths) > 40  # the tree is where we think it is
    return paths


def test_no_pickle_marshal_eval_or_exec_in_the_source_text() -> None:
    hits = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in _sources()
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if FORBIDDEN_TEXT.search(line)
    ]
    assert hits == []


def test_no_unsafe_imports_or_builtin_calls() -> None:
    hits = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                hits += [
                    f"{path.name}: import {a.name}"
                    for a in node.names
                    if a.name.split(".")[0] in FORBIDDEN_MODULES
                ]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
                hits.append(f"{path.name}: from {node.module} import ...")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in FORBIDDEN_CALLS
            ):
                hits.append(f"{path.name}:{node.lineno}: {node.func.id}(...)")
    assert hits == []


def test_the_checks_catch_what_they_are_meant_to() -> None:
    for bad in ("import pickle", "x = eval(data)", "exec(code)", "marshal.loads(b)"):
        assert FORBIDDEN_TEXT.search(bad), bad
    for fine in ("inspect.signature(f, eval_str=True)", "loop.run_in_executor(None, f)", "re.compile(r'x')"):
        assert not FORBIDDEN_TEXT.search(fine), fine
