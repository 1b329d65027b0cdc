"""The README's generated blocks (benchmarks/reports/readme_tables.py) match the committed results,
and a stale block is caught: no number in a results table of the README is typed by hand."""

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not installed; it is read from the checkout
    sys.path.insert(0, str(ROOT))
readme_tables = importlib.import_module("benchmarks.reports.readme_tables")


def test_every_generated_block_of_the_readme_matches_its_results():
    text = readme_tables.README.read_text()
    blocks = readme_tables._blocks(text)
    assert {"paper_gridworld", "tuning", "regime_richer_policy", "rates"} <= set(blocks)
    rendered = readme_tables._blocks(readme_tables.render(text))
    stale = [name for name in blocks if rendered[name] != blocks[name]]
    assert not stale, f"stale README blocks {stale}: run `make compare`"


def test_a_stale_or_unknown_block_is_reported(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- generated: rates -->\n| made up |\n<!-- end generated -->\n")
    assert readme_tables.main(["--check", "--readme", str(readme)]) == 1
    assert "rates" in capsys.readouterr().out
    assert readme_tables.main(["--readme", str(readme)]) == 0
    assert readme_tables.main(["--check", "--readme", str(readme)]) == 0
    assert "| made up |" not in readme.read_text()
    readme.write_text("<!-- generated: nothing-like-this -->\n<!-- end generated -->\n")
    with pytest.raises(SystemExit, match="nothing-like-this"):
        readme_tables.main(["--check", "--readme", str(readme)])
