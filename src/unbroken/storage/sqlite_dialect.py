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


def _match_table(toks: list[tuple[str, str]]) -> dict[int, int]:
    """Each ``(``'s index -> its ``)``'s index, in one pass (an unclosed one maps to ``len(toks)``)."""
    table: dict[int, int] = {}
    stack: list[int] = []
    for i, tok in enumerate(toks):
        if tok == ("op", "("):
            stack.append(i)
        elif tok == ("op", ")") and stack:
            table[stack.pop()] = i
    for i in stack:
        table[i] = len(toks)
    return table


def _is_word(tok: tuple[str, str], *words: str) -> bool:
    return tok[0] == "word" and tok[1].lower() in words


# A statement with none of these needs no rewrite (most of what the CLI sends): it is not even tokenized.
_TRIGGERS = re.compile(
    r"::|\*|\b(?:information_schema|cast|try_cast|first_value|last_value|ilike|index)\b", re.I
)


def translate(sql: str, columns: dict[str, list[str]] | None = None) -> str:
    """``sql`` in Restate's dialect, as SQLite SQL. ``columns``: each view's columns (for pruning)."""
    if not _TRIGGERS.search(sql):
        return sql
    return "".join(text for _, text in _rewrite(_tokens(sql), columns or {}))


def _rewrite(toks: list[tuple[str, str]], columns: dict[str, list[str]]) -> list[tuple[str, str]]:
    toks = _rename_info_schema(toks)
    toks = _alias_derived_tables(toks)
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
    only be used by name, so when no other ``*`` reads them whole, the ones named are all that is needed
    (a name anywhere in the query counts: at worst a column too many is kept).
    """
    stars = [i for i, t in enumerate(toks) if t == ("op", "*") and not _in_count(toks, i)]
    if len(stars) != 1:
        return toks
    i = stars[0]
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
        return toks
    close_i = _match_table(toks)[open_i]
    inner = toks[open_i + 1 : close_i]
    if any(t[1] in ("(", ",") or _is_word(t, "where", "join", "union", "group") for t in inner):
        return toks  # only the plain ``SELECT * FROM view [alias] [LIMIT n]``
    named = {t[1].lower() for t in toks if t[0] == "word"} | {
        t[1][1:-1].lower() for t in toks if t[0] == "qid"
    }
    view_columns = columns[toks[view_i][1].lower()]
    keep = [c for c in view_columns if c.lower() in named] or view_columns[:1]
    return toks[:i] + [("word", ", ".join(f'"{c}"' for c in keep))] + toks[i + 1 :]


_NOT_ALIASES = frozenset(
    {
        "where",
        "group",
        "order",
        "limit",
        "offset",
        "join",
        "left",
        "right",
        "inner",
        "outer",
        "cross",
        "full",
        "natural",
        "union",
        "except",
        "intersect",
        "on",
        "using",
        "having",
        "window",
        "as",
    }
)


def _alias_derived_tables(toks: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``FROM (SELECT * FROM t alias ...) WHERE alias.x``: DataFusion lets the outer query use the inner
    alias (Restate's CLI does, ``invocations list --service S``); SQLite needs it on the derived table."""
    match = _match_table(toks)
    inserts: dict[int, str] = {}
    for open_i, close_i in match.items():
        sel = _significant(toks, open_i + 1, 1)
        star = _significant(toks, sel + 1, 1)
        frm = _significant(toks, star + 1, 1)
        table = _significant(toks, frm + 1, 1)
        alias = _significant(toks, table + 1, 1)
        after = _significant(toks, close_i + 1, 1)
        if not (
            alias < close_i
            and _is_word(toks[sel], "select")
            and toks[star] == ("op", "*")
            and _is_word(toks[frm], "from")
            and toks[table][0] == "word"
            and toks[alias][0] == "word"
            and toks[alias][1].lower() not in _NOT_ALIASES
            and (
                after >= len(toks)
                or toks[after][0] != "word"
                or toks[after][1].lower() in _NOT_ALIASES - {"as"}
            )
        ):
            continue
        inserts[close_i] = toks[alias][1]
    if not inserts:
        return toks
    out: list[tuple[str, str]] = []
    for i, tok in enumerate(toks):
        out.append(tok)
        if i in inserts:
            out += [("ws", " "), ("word", inserts[i])]
    return out


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
    match = _match_table(toks)
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(toks):
        if _is_word(toks[i], "first_value", "last_value"):
            open_i = _significant(toks, i + 1, 1)
            if open_i < len(toks) and toks[open_i] == ("op", "("):
                close_i = match[open_i]
                after = _significant(toks, close_i + 1, 1)
                if close_i < len(toks) and not (after < len(toks) and _is_word(toks[after], "over")):
                    out += _ordered_call(toks[i][1].lower(), toks[open_i + 1 : close_i])
                    i = close_i + 1
                    continue
        out.append(toks[i])
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


class _Out:
    """The rewritten tokens, with what ``::`` and ``CAST(... AS type)`` need in O(1): for each ``(`` still
    open whether it is a ``CAST(``, and for each ``)`` where its ``(`` is."""

    def __init__(self) -> None:
        self.toks: list[tuple[str, str]] = []
        self.open: list[tuple[int, bool]] = []  # (index, is a CAST) of each ( not closed yet
        self.opener: dict[int, int] = {}  # index of a ) -> index of its (

    def add(self, tok: tuple[str, str]) -> None:
        if tok == ("op", "("):
            k = _significant(self.toks, len(self.toks) - 1, -1)
            self.open.append((len(self.toks), k >= 0 and _is_word(self.toks[k], "cast", "try_cast")))
        elif tok == ("op", ")") and self.open:
            self.opener[len(self.toks)] = self.open.pop()[0]
        self.toks.append(tok)

    def in_cast(self) -> bool:
        return bool(self.open) and self.open[-1][1]

    def operand_start(self) -> int:
        """Where the operand of a postfix ``::`` begins: a literal, a dotted name, or a parenthesised
        group with the function name before it."""
        j = _significant(self.toks, len(self.toks) - 1, -1)
        if j < 0:
            return len(self.toks)
        if self.toks[j] == ("op", ")") and j in self.opener:
            j = self.opener[j]
            k = j - 1
            return k if k >= 0 and self.toks[k][0] in ("word", "qid") else j
        while j - 2 >= 0 and self.toks[j - 1] == ("op", ".") and self.toks[j - 2][0] in ("word", "qid"):
            j -= 2
        return j


def _type_words(toks: list[tuple[str, str]], j: int) -> tuple[list[str], int]:
    """The words of a type name starting at ``j`` (``INT UNSIGNED``) and the index after them."""
    words: list[str] = []
    while j < len(toks) and toks[j][0] == "word" and (not words or toks[j][1].lower() in _TYPE_TAIL):
        words.append(toks[j][1])
        j = _significant(toks, j + 1, 1) if _continues(toks, j) else j + 1
    return words, j


def _rewrite_casts(toks: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = _Out()
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok == ("op", "::"):
            words, i = _type_words(toks, _significant(toks, i + 1, 1))
            at = out.operand_start()
            operand = out.toks[at:]
            del out.toks[at:]
            sqlite_type = _sqlite_type(words) or " ".join(words) or "TEXT"
            close = at + 2 + len(operand)
            out.toks += (
                [("word", "CAST"), ("op", "(")] + operand + [("word", f" AS {sqlite_type}"), ("op", ")")]
            )
            out.opener[close + 1] = at + 1  # the operand is balanced: the open list is unchanged
            continue
        if _is_word(tok, "as") and out.in_cast():
            words, j = _type_words(toks, _significant(toks, i + 1, 1))
            if words and _sqlite_type(words):
                for t in (tok, ("ws", " "), ("word", _sqlite_type(words) or "")):
                    out.add(t)
                i = j
                continue
        out.add(tok)
        i += 1
    return out.toks


def _continues(toks: list[tuple[str, str]], j: int) -> bool:
    """Whether the type name goes on after the word at ``j`` (``INT UNSIGNED``)."""
    k = _significant(toks, j + 1, 1)
    return k < len(toks) and toks[k][0] == "word" and toks[k][1].lower() in _TYPE_TAIL
