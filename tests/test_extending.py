"""docs/extending.md works as written: its `# file:` blocks make a package and an experiment that
name an environment, a policy, a link, a utility and an algorithm by import path, and run."""

import pytest
from conftest import extending_files

from zopg import cli, store


def test_the_page_has_a_recipe_for_every_kind():
    files = extending_files()
    for module in ("chain", "policies", "links", "utilities", "random_search"):
        assert f"myext/{module}.py" in files
    assert "plugins.toml" in files


def test_the_recipes_run_from_the_toml_file(recipes):
    out = recipes / "out"
    assert cli.main(["run", str(recipes / "plugins.toml"), "--out", str(out), "--quiet"]) == 0
    summary = store.read_json(out / "summary.json")
    results = {r["method"]: r for r in summary["results"]}
    assert set(results) == {"random-search", "zpg"}
    for result in results.values():
        assert result["env"] == "chain" and result["link"] == "steep"
        # The teacher's utility is 3 × the chain's return of 0 or 1, and scores are values of it.
        assert 0.0 < result["initial_value"]["mean"] <= 3.0
        assert 0.0 <= result["value"]["mean"] <= 3.0


def test_registered_names_work_like_import_paths(recipes, monkeypatch):
    """The page's "From Python" lines: a registered link, utility and algorithm are named like
    built-ins in a file, and a taken name is refused."""
    from myext.links import Steep
    from myext.random_search import ALGORITHM
    from myext.utilities import Scaled

    from zopg import ConfigError
    from zopg.algorithms import registry
    from zopg.preferences import links, register_link, register_utility, utilities

    monkeypatch.setattr(links, "_LINK_CLASSES", dict(links._LINK_CLASSES))
    monkeypatch.setattr(utilities, "UTILITIES", dict(utilities.UTILITIES))
    monkeypatch.setattr(registry, "ALGORITHMS", dict(registry.ALGORITHMS))
    register_link(Steep)
    register_utility(Scaled)
    registry.register(ALGORITHM)
    text = (recipes / "plugins.toml").read_text()
    for path, name in (
        ("myext.links:Steep", "steep"),
        ("myext.utilities:Scaled", "scaled"),
        ("myext.random_search:ALGORITHM", "random-search"),
    ):
        text = text.replace(f'"{path}"', f'"{name}"')
    (recipes / "named.toml").write_text(text)
    assert cli.main(["run", str(recipes / "named.toml"), "--dry-run"]) == 0
    with pytest.raises(ConfigError, match="is taken"):
        register_link(Steep)
    with pytest.raises(ConfigError, match="is taken"):
        register_utility(Scaled)
    with pytest.raises(ConfigError, match="must be a frozen dataclass with name"):
        register_link(Scaled)
