"""restate-sdk 1.2.0's public surface, compared with ours by introspection (``import unbroken as restate``).

Every public name of ``restate`` and of the submodules users import from, every public method of its
classes and every parameter that can be passed by name must exist in Unbroken, unless the README's
"Not yet supported" list names it (with the reason). restate-sdk is installed for the tests only.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import typing
from pathlib import Path
from typing import Any

import pytest

restate = pytest.importorskip("restate", reason="restate-sdk==1.2.0 comes with the 'test' extra")

README = Path(__file__).resolve().parents[2] / "README.md"
SUBMODULES = [
    "",
    "asyncio",
    "client",
    "client_types",
    "context",
    "endpoint",
    "entry_codec",
    "exceptions",
    "handler",
    "logging",
    "object",
    "retry_policy",
    "serde",
    "server",
    "server_context",
    "server_types",
    "service",
    "types",
    "vm",
    "workflow",
    "discovery",
    "aws_lambda",
    "harness",
    "context_managers",
    "extensions",
    "ext",
]
NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def not_yet_supported() -> set[str]:
    """The backticked names of the README's "Not yet supported" section, e.g. `restate.vm`."""
    text = README.read_text()
    section = text.split("### Not yet supported", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(restate[\w.]*)`", section))


def public_names(mod: Any) -> list[str]:
    if hasattr(mod, "__all__"):
        return list(mod.__all__)
    return [
        n
        for n, v in vars(mod).items()
        if not n.startswith("_")
        and not isinstance(v, typing.TypeVar | typing.ParamSpec)
        and not inspect.ismodule(v)
        and getattr(v, "__module__", None) == mod.__name__
    ]


def signature_gaps(where: str, theirs: Any, ours: Any) -> list[str]:
    try:
        a, b = inspect.signature(theirs), inspect.signature(ours)
    except (TypeError, ValueError):
        return []
    mine = b.parameters
    out = []
    positional = [p.name for p in b.parameters.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    for i, p in enumerate(a.parameters.values()):
        if p.kind in NAMED and p.name not in mine:
            out.append(f"{where}({p.name}=)")
        elif p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and (
            i >= len(positional) or positional[i] != p.name
        ):
            out.append(f"{where}: parameter {p.name!r} is not at position {i}")
        elif p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            if not any(q.kind is p.kind for q in mine.values()):
                out.append(f"{where}({p})")
    return out


def class_gaps(qual: str, theirs: type, ours: Any) -> list[str]:
    out = []
    if dataclasses.is_dataclass(theirs):
        fields = {f.name for f in dataclasses.fields(ours)} if dataclasses.is_dataclass(ours) else set()
        out += [f"{qual}.{f.name}" for f in dataclasses.fields(theirs) if f.name not in fields]
    for name, member in vars(theirs).items():
        if name.startswith("_") and name != "__init__":
            continue
        if dataclasses.is_dataclass(theirs) and name in theirs.__dataclass_fields__:
            continue
        if not hasattr(ours, name):
            out.append(f"{qual}.{name}")
        elif callable(member):
            out += signature_gaps(f"{qual}.{name}", member, getattr(ours, name))
    return out


def surface_gaps() -> list[str]:
    """Everything of restate-sdk's that Unbroken lacks, as dotted names (``restate.context.Context.scope``)."""
    out: list[str] = []
    for sub in SUBMODULES:
        rname = "restate" + ("." + sub if sub else "")
        try:
            theirs = importlib.import_module(rname)
        except ImportError:  # an optional extra of restate-sdk (e.g. the harness) is not installed
            continue
        try:
            ours = importlib.import_module("unbroken" + ("." + sub if sub else ""))
        except ImportError:
            out.append(rname)
            continue
        for name in public_names(theirs):
            qual = f"{rname}.{name}"
            if not hasattr(ours, name):
                out.append(qual)
                continue
            value = getattr(theirs, name)
            if inspect.isclass(value):
                out += class_gaps(qual, value, getattr(ours, name))
            elif callable(value):
                out += signature_gaps(qual, value, getattr(ours, name))
    return out


def _listed(gap: str, listed: set[str]) -> bool:
    # "restate.vm" covers "restate.vm.VMWrapper"; a gap with a parameter is covered by its callable
    name = gap.split("(")[0].split(":")[0]
    parts = name.split(".")
    return any(".".join(parts[:i]) in listed for i in range(1, len(parts) + 1))


def test_restate_sdk_version_under_test() -> None:
    from importlib.metadata import version

    assert version("restate-sdk") == "1.2.0"


def test_every_public_name_submodule_and_parameter_exists_or_is_listed_as_not_yet_supported() -> None:
    listed = not_yet_supported()
    missing = [g for g in surface_gaps() if not _listed(g, listed)]
    assert missing == [], (
        "restate-sdk 1.2.0 API missing from Unbroken and not in README's list:\n" + "\n".join(missing)
    )


def test_the_not_yet_supported_list_says_why() -> None:
    section = README.read_text().split("### Not yet supported", 1)[1].split("\n## ", 1)[0]
    for line in section.strip().splitlines():
        if line.startswith("- "):
            assert ":" in line, f"no reason given: {line}"


def test_the_list_holds_only_what_is_missing() -> None:
    """A name built since it was listed must leave the list (else the list lies about the API)."""
    gaps = surface_gaps()
    stale = [
        name
        for name in not_yet_supported()
        if not any(g == name or g.startswith(name + ".") or g.startswith(name + "(") for g in gaps)
    ]
    assert stale == [], f"listed as not yet supported, but present: {stale}"
