"""The generated blocks of the README and the docs pages (benchmarks/reports/readme_tables.py)
match the committed results, and a stale block is caught: no number in a results table is typed
by hand."""

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not installed; it is read from the checkout
    sys.path.insert(0, str(ROOT))
readme_tables = importlib.import_module("benchmarks.reports.readme_tables")


def test_every_generated_block_matches_its_results():
    found = {}
    for page in readme_tables.pages():
        text = page.read_text()
        blocks = readme_tables._blocks(text)
        rendered = readme_tables._blocks(readme_tables.render(text))
        stale = [name for name in blocks if rendered[name] != blocks[name]]
        assert not stale, f"{page.name}: stale blocks {stale}: run `make compare`"
        found[page.name] = set(blocks)
    assert "paper_gridworld" in found["README.md"]
    every = set().union(*found.values())
    # Every block the script knows is shown somewhere: a result without a page is a lost result.
    assert every == set(readme_tables.BLOCKS), set(readme_tables.BLOCKS) - every


def test_a_stale_or_unknown_block_is_reported(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("x\n<!-- generated: rates -->\n| made up |\n<!-- end generated -->\n")
    assert readme_tables.main(["--check", "--page", str(page)]) == 1
    assert "rates" in capsys.readouterr().out
    assert readme_tables.main(["--page", str(page)]) == 0
    assert readme_tables.main(["--check", "--page", str(page)]) == 0
    assert "| made up |" not in page.read_text()
    page.write_text("<!-- generated: nothing-like-this -->\n<!-- end generated -->\n")
    with pytest.raises(SystemExit, match="nothing-like-this"):
        readme_tables.main(["--check", "--page", str(page)])
