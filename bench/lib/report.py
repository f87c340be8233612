"""The tables: bench/run.py's, bench/compare's (a side against another, with ratios) and bench/scale.py's."""

from __future__ import annotations

from typing import Any

from lib.measure import Result
from lib.workloads import ANCHOR, SEND


def table(results: list[Result], anchor: bool) -> str:
    head = [
        "workload",
        "conns",
        "inv/s",
        "p50 ms",
        "p99 ms",
        "CPU ms/inv",
        "peak RSS MiB",
        "disk B/inv",
        "written KiB/inv",
        "other load %",
        "errors",
    ]
    if anchor:
        head += ["anchor inv/s*", "ratio", "anchor p50*", "anchor CPU ms/inv*"]
    rows = [head]
    for r in results:
        errs = str(r.errors) + (f" (+{r.warmup_errors} warm-up)" if r.warmup_errors else "")
        row = [
            f"{r.wid} {r.workload}",
            str(r.conns),
            f"{r.invocations_per_s:.0f}",
            _num(r.p50_ms),
            _num(r.p99_ms),
            f"{sum(r.cpu_ms_per_inv.values()):.2f}" if r.cpu_ms_per_inv else "-",
            f"{r.peak_rss_mib:.0f}",
            "-" if r.disk_bytes_per_inv is None else f"{r.disk_bytes_per_inv:.0f}",
            "-" if r.written_bytes_per_inv is None else f"{r.written_bytes_per_inv / 1024:.1f}",
            f"{r.other_cpu_pct:.0f}",
            errs,
        ]
        if anchor:
            a = ANCHOR.get((r.workload, r.conns))
            if a:
                inv = sum(x[0] for x in a) / len(a)
                row += [
                    f"{inv:.0f}",
                    f"{r.invocations_per_s / inv:.2f}x",
                    _num(sum(x[1] for x in a) / len(a)),
                    f"{sum(x[3] for x in a) / len(a):.2f}",
                ]
            else:
                row += ["-", "-", "-", "-"]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(wd) for c, wd in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    return "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _ratio(u: float | None, r: float | None) -> str:
    if u is None or r is None or r == 0:
        return "-"
    return f"{u / r:.2f}"


def render(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = [i >= 1 for i in range(len(widths))]
    lines = [
        "| "
        + " | ".join(
            c.rjust(wd) if r and n else c.ljust(wd) for c, wd, r in zip(row, widths, right, strict=True)
        )
        + " |"
        for n, row in enumerate(rows)
    ]
    lines.insert(
        1,
        "|"
        + "|".join("-" * (wd + 1) + (":" if r else "-") for wd, r in zip(widths, right, strict=True))
        + "|",
    )
    return "\n".join(lines)


def _cpu_cell(r: dict[str, Any] | None) -> str:
    if r is None or not r["cpu_ms_per_inv"]:
        return "-"
    parts = r["cpu_ms_per_inv"]
    if len(parts) == 1:
        return _fmt(parts["server"])
    return f"{_fmt(parts['server'])}+{_fmt(parts['service'])}"


def _get(r: dict[str, Any] | None, key: str) -> float | None:
    return None if r is None else r.get(key)


def comparison_table(cells: list[dict[str, Any]], a: str, b: str, a_tag: str, b_tag: str) -> str:
    """One row per (workload, conns): each figure for ``a``, ``b`` and a/b."""
    figures = [("inv/s", "invocations_per_s"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms")]
    head = ["workload", "conns"]
    for label, _ in figures:
        head += [f"{label} {a_tag}", b_tag, f"{a_tag}/{b_tag}"]
    head += [
        f"CPU ms/inv {a_tag}",
        f"{b_tag} srv+svc",
        f"{a_tag}/{b_tag}",
        f"RSS MiB {a_tag}",
        b_tag,
        f"{a_tag}/{b_tag}",
        f"disk B/inv {a_tag}",
        b_tag,
        f"{a_tag}/{b_tag}",
        "errors",
        "other load %",
    ]
    rows = [head]
    for c in cells:
        ra, rb = c["results"].get(a), c["results"].get(b)
        name = f"{c['wid']} {c['workload']}" + (" (accepted/s)" if c["workload"] == SEND.name else "")
        row = [name, str(c["conns"])]
        for _, key in figures:
            row += [_fmt(_get(ra, key)), _fmt(_get(rb, key)), _ratio(_get(ra, key), _get(rb, key))]
        row += [
            _cpu_cell(ra),
            _cpu_cell(rb),
            _ratio(_get(ra, "cpu_ms_per_inv_total"), _get(rb, "cpu_ms_per_inv_total")),
        ]
        for key in ("peak_rss_mib_total", "disk_bytes_per_inv"):
            row += [_fmt(_get(ra, key)), _fmt(_get(rb, key)), _ratio(_get(ra, key), _get(rb, key))]
        row += [
            " / ".join("-" if r is None else str(r["errors"] + r["warmup_errors"]) for r in (ra, rb)),
            " / ".join("-" if r is None else f"{r['other_cpu_pct']:.0f}" for r in (ra, rb)),
        ]
        rows.append(row)
    return render(rows)


def send_table(cells: list[dict[str, Any]], a: str, b: str, a_tag: str, b_tag: str) -> str | None:
    sends = [c for c in cells if c["workload"] == SEND.name]
    if not sends:
        return None
    rows = [
        [
            "W6 send",
            "conns",
            f"accepted/s {a_tag}",
            b_tag,
            f"{a_tag}/{b_tag}",
            f"backlog {a_tag}",
            b_tag,
            f"drain s {a_tag}",
            b_tag,
            f"completed/s {a_tag}",
            b_tag,
            f"{a_tag}/{b_tag}",
        ]
    ]
    for c in sends:
        ra, rb = c["results"].get(a), c["results"].get(b)
        rows.append(
            [
                "W6 send",
                str(c["conns"]),
                _fmt(_get(ra, "calls_per_s")),
                _fmt(_get(rb, "calls_per_s")),
                _ratio(_get(ra, "calls_per_s"), _get(rb, "calls_per_s")),
                str(_get(ra, "backlog_at_end") if ra else "-"),
                str(_get(rb, "backlog_at_end") if rb else "-"),
                _fmt(_get(ra, "drain_s")),
                _fmt(_get(rb, "drain_s")),
                _fmt(_get(ra, "completed_per_s")),
                _fmt(_get(rb, "completed_per_s")),
                _ratio(_get(ra, "completed_per_s"), _get(rb, "completed_per_s")),
            ]
        )
    return render(rows)


def summary_table(sides: dict[str, dict[str, Any]], a: str, b: str, a_tag: str, b_tag: str) -> str:
    sa, sb = sides.get(a), sides.get(b)
    rows = [["whole run", a_tag, b_tag, f"{a_tag}/{b_tag}"]]
    for label, key in [
        ("health answered after start, s", "health_s"),
        ("first successful call after start, s", "first_call_s"),
        ("peak RSS (VmHWM, all processes), MiB", "vmhwm_mib_total"),
        ("data dir at end, MiB", "data_dir_mib"),
        ("data dir per invocation, bytes", "data_dir_bytes_per_inv"),
    ]:
        va, vb = _get(sa, key), _get(sb, key)
        rows.append([label, _fmt(va), _fmt(vb), _ratio(va, vb)])
    return render(rows)


def md_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in [head, *rows]
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
