"""Tables and verdict lines drawn from a comparisons record: the marks follow the paired tests."""

from __future__ import annotations

from zopg.analysis import tables


def comparison(method, difference, p_holm, verdict, tested=True, reference=False):
    return {
        "method": method,
        "tested": tested,
        "reference": reference,
        "mean_difference": difference,
        "ci": [difference - 0.01, difference + 0.01],
        "p_holm": p_holm,
        "verdict": verdict,
    }


def panel(best, comparisons):
    methods = [
        {"method": "a", "reference": False, "mean": 0.9, "ci": [0.88, 0.92]},
        {"method": "b", "reference": False, "mean": 0.85, "ci": [0.8, 0.9]},
        {"method": "c", "reference": False, "mean": 0.5, "ci": [0.4, 0.6]},
        {"method": "ref", "reference": True, "mean": 1.0, "ci": [1.0, 1.0]},
    ]
    return {"panel": "env · link", "methods": methods, "best": best, "comparisons": comparisons}


def test_a_resolved_best_is_bold_and_the_rest_marked_worse():
    p = panel(
        {"status": "best", "method": "a", "tied": []},
        [
            comparison("b", -0.05, 0.01, "worse"),
            comparison("c", -0.4, 0.002, "worse"),
            comparison("ref", 0.1, None, "not tested", tested=False, reference=True),
        ],
    )
    assert tables.cell(p, "a") == "**0.900** [0.880, 0.920]"
    assert tables.cell(p, "b").endswith("▾")
    assert tables.cell(p, "ref") == "1.000 [1.000, 1.000]"
    line = tables.verdict_line(p)
    assert line.startswith("env · link: a best; the closest, b, −0.050")
    assert "Holm p 0.01" in line


def test_ties_are_italic_and_no_method_is_called_best():
    p = panel(
        {"status": "not resolved", "method": None, "tied": ["a", "b"]},
        [
            comparison("b", -0.05, 0.3, "no detectable difference"),
            comparison("c", -0.4, 0.002, "worse"),
        ],
    )
    assert tables.cell(p, "a").startswith("*0.900*")
    assert tables.cell(p, "b").startswith("*0.850*")
    assert "best not resolved" in tables.verdict_line(p)
    table = tables.markdown_table({"panels": [p]}, methods=["a", "b", "c"])
    assert table.splitlines()[0] == "| method | env · link |"
    assert len(table.splitlines()) == 5


def test_not_resolvable_is_marked_as_such():
    p = panel(
        {"status": "not resolved", "method": None, "tied": ["a"]},
        [comparison("c", -0.4, 1.0, "not resolvable")],
    )
    assert tables.cell(p, "c").endswith("?")
    transposed = tables.markdown_table({"panels": [p]}, methods=["a", "c"], rows="panels")
    assert transposed.splitlines()[0] == "| panel | a | c |"
