"""Restate's SQL dialect (Apache DataFusion's) rewritten into SQLite's, for ``POST /query``.

Restate's CLI and users write DataFusion SQL over Restate's tables. Most of it is SQLite already; what differs
and is rewritten here, token by token (never inside string literals or quoted names):

- ``information_schema.columns`` / ``.tables`` name the views ``information_schema_columns`` / ``_tables``
  (SQLite reads ``a.b`` as table b of an attached database ``a``, and queries may attach none);
- ``expr::TYPE`` is ``CAST(expr AS TYPE)``, and DataFusion's type names (``STRING``, ``INT UNSIGNED``,
  ``BIGINT``, ``DOUBLE``, ``BOOLEAN``, ``TIMESTAMP``, ...) become SQLite's (``TEXT``, ``INTEGER``, ``REAL``);
- ``first_value(x)`` / ``last_value(x)`` without ``OVER`` are DataFusion aggregates (SQLite has them as
  window functions only): ``ub_first(x)``; ``first_value(x ORDER BY y [DESC])`` is ``ub_first_by(x, y, dir)``;
- ``ILIKE`` is ``LIKE`` (SQLite's LIKE already ignores ASCII case); ``index`` (a keyword in SQLite, a column
  of ``sys_journal``) is quoted where it names a column.

Anything else is left for SQLite to parse; a query it cannot parse is answered 400 with SQLite's message.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|--[^\n]*|/\*.*?\*/)
  | (?P<str>'(?:[^']|'')*'?)
  | (?P<qid>"(?:[^"]|"")*"?|`[^`]*`?|\[[^\]]*\]?)
  | (?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<op>::|==|!=|<>|<=|>=|\|\||.)
    """,
    re.VERBOSE | re.DOTALL,
)

# DataFusion type name (first word) -> SQLite type; the words after it that belong to the name
_TYPES = {
    "string": "TEXT",
    "varchar": "TEXT",
    "text": "TEXT",
    "char": "TEXT",
    "utf8": "TEXT",
    "timestamp": "TEXT",  # timestamps are RFC 3339 text in the views
    "date": "TEXT",
    "int": "INTEGER",
    "integer": "INTEGER",
    "bigint": "INTEGER",
    "smallint": "INTEGER",
    "tinyint": "INTEGER",
    "boolean": "INTEGER",
    "bool": "INTEGER",
    "double": "REAL",
    "float": "REAL",
    "real": "REAL",
    "decimal": "REAL",
    "bytea": "BLOB",
    "binary": "BLOB",
    "varbinary": "BLOB",
    "blob": "BLOB",
}
_TYPE_TAIL = frozenset({"unsigned", "precision", "varying"})
_INFO_TABLES = frozenset({"columns", "tables"})


def _tokens(sql: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup or "op"
        out.append((kind, m.group()))
    return out


def _significant(toks: list[tuple[str, str]], i: int, step: int) -> int:
    """The index of the next non-blank token from ``i`` in direction ``step`` (-1 or len when none)."""
    while 0 <= i < len(toks) and toks[i][0] == "ws":
        i += step
    return i


def _matching(toks: list[tuple[str, str]], open_i: int) -> int:
    """The index of the ``)`` closing the ``(`` at ``open_i`` (len(toks) when unclosed)."""
    depth = 0
    for i in range(open_i, len(toks)):
        if toks[i] == ("op", "("):
            depth += 1
        elif toks[i] == ("op", ")"):
            depth -= 1
            if depth == 0:
                return i
    return len(toks)


def _is_word(tok: tuple[str, str], *words: str) -> bool:
    return tok[0] == "word" and tok[1].lower() in words


def translate(sql: str, columns: dict[str, list[str]] | None = None) -> str:
    """``sql`` in Restate's dialect, as SQLite SQL. ``columns``: each view's columns (for pruning)."""
    return "".join(text for _, text in _rewrite(_tokens(sql), columns or {}))


def _rewrite(toks: list[tuple[str, str]], columns: dict[str, list[str]]) -> list[tuple[str, str]]:
    toks = _rename_info_schema(toks)
    toks = _prune_star_subqueries(toks, columns)
    toks = _rewrite_ordered_aggregates(toks)
    toks = _rewrite_casts(toks)
    out: list[tuple[str, str]] = []
    for i, tok in enumerate(toks):
        if _is_word(tok, "ilike"):
            tok = ("word", "LIKE")
        elif _is_word(tok, "index"):
            before = _significant(toks, i - 1, -1)
            # ``CREATE INDEX`` / ``INDEXED BY`` never reach here as columns; a bare ``index`` is a column
            if before < 0 or not _is_word(toks[before], "create", "unique", "drop", "not"):
                tok = ("qid", '"index"')
        out.append(tok)
    return out


def _prune_star_subqueries(
    toks: list[tuple[str, str]], columns: dict[str, list[str]]
) -> list[tuple[str, str]]:
    """``FROM (SELECT * FROM view [alias] LIMIT n)``: select only the view's columns the query names.

    Restate's CLI counts invocations with ``SELECT COUNT(1) FROM (SELECT * FROM sys_invocation inv LIMIT
    50000) WHERE ...``; SQLite cannot flatten a LIMIT subquery under a WHERE, so it would compute every
    column of 50,000 rows (each decoded from its blob) to count them. Outside the subquery its columns can
    only be used by name, so when no other ``*`` reads them whole, the ones named are all that is needed.
    """
    for i in range(len(toks)):
        if toks[i] != ("op", "*"):
            continue
        sel = _significant(toks, i - 1, -1)
        open_i = _significant(toks, sel - 1, -1)
        frm = _significant(toks, i + 1, 1)
        view_i = _significant(toks, frm + 1, 1)
        if not (
            sel >= 0
            and _is_word(toks[sel], "select")
            and open_i >= 0
            and toks[open_i] == ("op", "(")
            and frm < len(toks)
            and _is_word(toks[frm], "from")
            and view_i < len(toks)
            and toks[view_i][0] == "word"
            and toks[view_i][1].lower() in columns
        ):
            continue
        close_i = _matching(toks, open_i)
        inner = toks[open_i + 1 : close_i]
        if any(t[1] in ("(", ",") or _is_word(t, "where", "join", "union", "group") for t in inner):
            continue  # only the plain ``SELECT * FROM view [alias] [LIMIT n]``
        outside = toks[:open_i] + toks[close_i + 1 :]
        if any(t == ("op", "*") and not _in_count(outside, j) for j, t in enumerate(outside)):
            continue
        view_columns = columns[toks[view_i][1].lower()]
        named = {t[1].lower() for t in outside if t[0] == "word"} | {
            t[1][1:-1].lower() for t in outside if t[0] == "qid"
        }
        keep = [c for c in view_columns if c.lower() in named] or view_columns[:1]
        return _prune_star_subqueries(
            toks[:i] + [("word", ", ".join(f'"{c}"' for c in keep))] + toks[i + 1 :], columns
        )
    return toks


def _in_count(toks: list[tuple[str, str]], j: int) -> bool:
    """Whether the ``*`` at ``j`` is the argument of ``COUNT(*)``."""
    before = _significant(toks, j - 1, -1)
    name = _significant(toks, before - 1, -1)
    return before >= 0 and toks[before] == ("op", "(") and name >= 0 and _is_word(toks[name], "count")


def _rename_info_schema(toks: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        if (
            _is_word(tok, "information_schema")
            and i + 2 < len(toks)
            and toks[i + 1] == ("op", ".")
            and toks[i + 2][0] == "word"
            and toks[i + 2][1].lower() in _INFO_TABLES
        ):
            out.append(("word", f"information_schema_{toks[i + 2][1].lower()}"))
            i += 3
            continue
        out.append(tok)
        i += 1
    return out


def _rewrite_ordered_aggregates(toks: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``first_value(x [ORDER BY y [ASC|DESC]])`` without ``OVER`` → ``ub_first_by(x, y, dir)``."""
    out = list(toks)
    i = 0
    while i < len(out):
        if _is_word(out[i], "first_value", "last_value"):
            open_i = _significant(out, i + 1, 1)
            if open_i < len(out) and out[open_i] == ("op", "("):
                close_i = _matching(out, open_i)
                after = _significant(out, close_i + 1, 1)
                if close_i < len(out) and not (after < len(out) and _is_word(out[after], "over")):
                    out[i : close_i + 1] = _ordered_call(out[i][1].lower(), out[open_i + 1 : close_i])
        i += 1
    return out


def _ordered_call(name: str, args: list[tuple[str, str]]) -> list[tuple[str, str]]:
    depth, order_at = 0, -1
    for j, tok in enumerate(args):
        if tok == ("op", "("):
            depth += 1
        elif tok == ("op", ")"):
            depth -= 1
        elif depth == 0 and _is_word(tok, "order"):
            order_at = j
            break
    last = name == "last_value"
    if order_at < 0:  # no order: any row of the group (DataFusion's answer is as arbitrary)
        return [("word", "ub_first_by"), ("op", "(")] + args + _tokens(", NULL, 0)")
    value = args[:order_at]
    key = args[_significant(args, order_at + 1, 1) + 1 :]  # after ORDER BY
    descending = last
    end = _significant(key, len(key) - 1, -1)
    if end >= 0 and _is_word(key[end], "asc", "desc"):
        descending = (key[end][1].lower() == "desc") != last
        key = key[:end]
    return (
        [("word", "ub_first_by"), ("op", "(")]
        + value
        + _tokens(", ")
        + key
        + _tokens(f", {int(descending)})")
    )


def _sqlite_type(words: list[str]) -> str | None:
    return _TYPES.get(words[0].lower()) if words else None


def _rewrite_casts(toks: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok == ("op", "::"):
            j = _significant(toks, i + 1, 1)
            words: list[str] = []
            while j < len(toks) and toks[j][0] == "word" and (not words or toks[j][1].lower() in _TYPE_TAIL):
                words.append(toks[j][1])
                j = _significant(toks, j + 1, 1) if _continues(toks, j) else j + 1
            operand_at = _operand_start(out)
            operand = out[operand_at:]
            del out[operand_at:]
            sqlite_type = _sqlite_type(words) or " ".join(words) or "TEXT"
            out += [("word", "CAST"), ("op", "(")] + operand + [("word", f" AS {sqlite_type}"), ("op", ")")]
            i = j
            continue
        if _is_word(tok, "as") and _inside_cast(out):
            j = _significant(toks, i + 1, 1)
            words = []
            while j < len(toks) and toks[j][0] == "word":
                words.append(toks[j][1])
                j = _significant(toks, j + 1, 1) if _continues(toks, j) else j + 1
            if words and _sqlite_type(words):
                out += [tok, ("ws", " "), ("word", _sqlite_type(words) or "")]
                i = j
                continue
        out.append(tok)
        i += 1
    return out


def _continues(toks: list[tuple[str, str]], j: int) -> bool:
    """Whether the type name goes on after the word at ``j`` (``INT UNSIGNED``)."""
    k = _significant(toks, j + 1, 1)
    return k < len(toks) and toks[k][0] == "word" and toks[k][1].lower() in _TYPE_TAIL


def _inside_cast(out: list[tuple[str, str]]) -> bool:
    """Whether the innermost open parenthesis of ``out`` is a ``CAST(`` / ``TRY_CAST(``."""
    depth = 0
    for j in range(len(out) - 1, -1, -1):
        if out[j] == ("op", ")"):
            depth += 1
        elif out[j] == ("op", "("):
            if depth == 0:
                k = _significant(out, j - 1, -1)
                return k >= 0 and _is_word(out[k], "cast", "try_cast")
            depth -= 1
    return False


def _operand_start(out: list[tuple[str, str]]) -> int:
    """Where the operand of a postfix ``::`` begins: a literal, a dotted name, or a parenthesised group
    with the function name before it."""
    j = len(out) - 1
    while j >= 0 and out[j][0] == "ws":
        j -= 1
    if j < 0:
        return len(out)
    if out[j] == ("op", ")"):
        depth = 0
        while j >= 0:
            if out[j] == ("op", ")"):
                depth += 1
            elif out[j] == ("op", "("):
                depth -= 1
                if depth == 0:
                    break
            j -= 1
        k = j - 1
        if k >= 0 and out[k][0] in ("word", "qid"):
            j = k
        return max(j, 0)
    while j - 2 >= 0 and out[j - 1] == ("op", ".") and out[j - 2][0] in ("word", "qid"):
        j -= 2
    return j
