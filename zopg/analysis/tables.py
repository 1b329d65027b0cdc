"""Markdown tables and verdict lines from a comparisons record (`zopg compare`), so that every
number and every "A beats B" in the README and docs comes from comparisons.json, never by hand.

A cell is the method's final mean with its interval (the kind whose coverage was measured,
zopg.analysis.paired), marked by what the paired tests say against the panel's top method:

    **0.997** [0.994, 0.999]   the best: every other budget-matched method significantly worse
    *0.995* [0.993, 0.998]     tied at the top: the top one and those not significantly worse
    0.943 [0.914, 0.972] ▾     significantly worse than the top (Holm-adjusted p < alpha)
    0.943 [0.914, 0.972] ?     not resolvable: no outcome of these seeds could pass Holm
    0.943 [0.914, 0.972]       a reference (reward access): shown, not tested
"""

from __future__ import annotations

LEGEND = (
    "**bold**: best, every other budget-matched method significantly worse; *italic*: tied "
    "at the top (the top method by mean and those not significantly worse than it); ▾: "
    "significantly worse than the top; ?: not resolvable with these seeds. Tests: paired "
    "sign-flip over shared seeds against the panel's top method, Holm-adjusted over the "
    "family each table names: the results folder, or each panel where the folder's seeds "
    "could not resolve that many comparisons (`zopg compare --family auto`)."
)


def number(x, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}f}".replace("-", "−")


def interval(ci, digits: int = 3) -> str:
    low, high = ci
    if low is None or high is None:
        return ""
    return f" [{number(low, digits)}, {number(high, digits)}]"


def mark(panel: dict, method: str) -> str:
    """best / tied / worse / not-resolvable / reference / untested for one method of a panel."""
    entry = next(m for m in panel["methods"] if m["method"] == method)
    if entry["reference"]:
        return "reference"
    best = panel["best"]
    if best["status"] in ("best", "single") and best["method"] == method:
        return "best"
    if method in best.get("tied", []):
        return "tied"
    comparison = next((c for c in panel["comparisons"] if c["method"] == method), None)
    if comparison is None or not comparison["tested"]:
        return "untested"
    if comparison["verdict"] == "not resolvable":
        return "not resolvable"
    if comparison["verdict"] == "worse":
        return "worse"
    return "untested"


def cell(panel: dict, method: str, digits: int = 3) -> str:
    entry = next((m for m in panel["methods"] if m["method"] == method), None)
    if entry is None or entry["mean"] is None:
        return "–"
    value, ci = number(entry["mean"], digits), interval(entry.get("ci", [None, None]), digits)
    kind = mark(panel, method)
    if kind == "best":
        return f"**{value}**{ci}"
    if kind == "tied":
        return f"*{value}*{ci}"
    suffix = {"worse": " ▾", "not resolvable": " ?"}.get(kind, "")
    return f"{value}{ci}{suffix}"


def _methods(record: dict, methods) -> list[str]:
    if methods is not None:
        return list(methods)
    seen: list[str] = []
    for panel in record["panels"]:
        for m in panel["methods"]:
            if m["method"] not in seen:
                seen.append(m["method"])
    return seen


def select_panels(record: dict, where=None) -> list[dict]:
    """The panels for which where(panel) is true (all by default), in the folder's order."""
    return [p for p in record["panels"] if where is None or where(p)]


def markdown_table(
    record: dict,
    *,
    methods=None,
    panels=None,
    labels: dict | None = None,
    panel_label=None,
    rows: str = "methods",
    digits: int = 3,
) -> str:
    """A markdown table of the record's panels: one row per method (rows="methods") or one per
    panel (rows="panels"). labels: display names of methods; panel_label(panel) -> str."""
    labels = labels or {}
    panels = select_panels(record) if panels is None else panels
    names = _methods(record, methods)
    panel_label = panel_label or (lambda p: p["panel"])
    if rows == "methods":
        header = ["method", *(panel_label(p) for p in panels)]
        body = [[labels.get(m, m), *(cell(p, m, digits) for p in panels)] for m in names]
    else:
        header = ["panel", *(labels.get(m, m) for m in names)]
        body = [[panel_label(p), *(cell(p, m, digits) for m in names)] for p in panels]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _p(p) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def verdict_line(panel: dict, labels: dict | None = None, panel_label=None) -> str:
    """One sentence per panel: which method is best by the paired tests, or which are tied,
    with the closest comparison's difference, interval and Holm-adjusted p."""
    labels = labels or {}
    name = (panel_label or (lambda p: p["panel"]))(panel)
    show = lambda m: labels.get(m, m)  # noqa: E731
    best = panel["best"]
    tested = [c for c in panel["comparisons"] if c["tested"] and not c["reference"]]
    if best["status"] == "best":
        closest = max(tested, key=lambda c: c["mean_difference"])
        return (
            f"{name}: {show(best['method'])} best; the closest, {show(closest['method'])}, "
            f"{number(closest['mean_difference'])}{interval(closest['ci'])} "
            f"(Holm p {_p(closest['p_holm'])})"
        )
    if best["status"] == "not resolved":
        top, tied = best["tied"][0], best["tied"][1:]
        parts = []
        for method in tied:
            c = next(c for c in tested if c["method"] == method)
            parts.append(
                f"{show(method)} {number(c['mean_difference'])}{interval(c['ci'])} "
                f"(Holm p {_p(c['p_holm'])})"
            )
        return f"{name}: best not resolved; against the top by mean, {show(top)}: " + "; ".join(
            parts
        )
    return f"{name}: {best['status']} ({best['reason']})"
