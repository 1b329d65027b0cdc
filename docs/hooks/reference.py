"""MkDocs hook: fills the `<!-- reference: NAME -->` markers of the docs from the code itself.

The experiment-file reference lists every algorithm's config fields, the links, utilities,
teacher and evaluation fields and the built-in environments from their declarations, so the page
cannot drift from the code: a new field appears on the next `make docs`.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

MARKER = re.compile(r"<!-- reference: ([a-z-]+) -->")
# The committed results folder: pages link its figures as ../results/... (right on GitHub and in
# a clone); the site gets copies under results/ and the links are rewritten to them.
RESULTS = Path(__file__).resolve().parents[2] / "results"


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _summary(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _code(value) -> str:
    return "" if value == "" else f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def algorithms() -> str:
    from zopg.algorithms import registry

    parts = []
    for name, algo in registry.ALGORITHMS.items():
        config = algo.config
        kind = (
            "a reference (reward access; never budget-matched)"
            if algo.reference
            else f"budget-matched: `budget_queries` sets `{config.budget_field}`"
        )
        rows = [(f"`{r.path}`", _code(r.default), r.allowed, r.doc) for r in config.field_docs()]
        parts.append(
            f"### `{name}`\n\n{algo.description}. Assumes: {algo.assumes or 'nothing'}; {kind}. "
            f"Config class: `{config.__module__}.{config.__qualname__}`.\n\n"
            + _table(("field", "default", "allowed", "meaning"), rows)
        )
        if algo.search_space is not None:
            dims = "\n".join(f"- {d.describe()}" for d in algo.search_space.dimensions)
            parts.append(f"`zopg tune` searches:\n\n{dims}")
    return "\n\n".join(parts)


def links() -> str:
    from zopg.preferences import link_names, make_link

    rows = []
    for name in link_names():
        link = make_link(name)
        params = ", ".join(
            f"`{f.name} = {getattr(link, f.name)}`" for f in dataclasses.fields(link)
        )
        doc = _summary(type(link).__doc__)
        rows.append((f"`{name}`", params or "none", doc))
    return _table(("name", "parameters (defaults)", "what it is"), rows)


def utilities() -> str:
    from zopg.preferences import utility_names
    from zopg.preferences.utilities import utility_class

    rows = []
    for name in utility_names():
        cls = utility_class(name)
        fields = [f for f in dataclasses.fields(cls) if f.name not in cls.bound_fields]
        shown = []
        for f in fields:
            default = f.default if f.default is not dataclasses.MISSING else "required"
            shown.append(f"`{f.name} = {default}`")
        doc = _summary(cls.__doc__)
        rows.append((f"`{name}`", ", ".join(shown) or "none", doc))
    return _table(("name", "parameters (defaults)", "what it is"), rows)


def _dataclass_rows(cls) -> list[tuple]:
    rows = []
    for f in dataclasses.fields(cls):
        rows.append((f"`{f.name}`", _code(f.default)))
    return rows


def teacher() -> str:
    from zopg.preferences.teacher import Teacher

    return _table(("field", "default"), _dataclass_rows(Teacher))


def evaluation() -> str:
    from zopg.experiments.schema import Evaluation

    return _table(("field", "default"), _dataclass_rows(Evaluation))


def environments() -> str:
    from zopg.envs import make, registered_envs

    rows = []
    for env_id in registered_envs():
        if env_id.startswith(("gymnax/", "brax/")):
            # Built on demand: importing gymnax or brax takes seconds and needs the package.
            package = env_id.split("/")[0]
            rows.append((f"`{env_id}`", f"the {package} environment's own parameters", ""))
            continue
        if env_id in ("gridworld", "gridworld/open", "gridworld/random"):
            needs = {
                "gridworld": "`layout` (rows of `S`, `.`, `X`, `G`) and `horizon` required",
                "gridworld/open": "`size` (2 to 20; horizon 3·size + 1)",
                "gridworld/random": "`seed`, `height`, `width`, `traps` (a random layout)",
            }[env_id]
            rows.append((f"`{env_id}`", needs, "plus the GridWorld fields"))
            continue
        _, params = make(env_id)
        fields = [
            f"`{f.name} = {getattr(params, f.name)!r}`"
            for f in dataclasses.fields(params)
            if f.name != "layout"
        ]
        rows.append((f"`{env_id}`", "layout built in", ", ".join(fields)))
    return _table(("id", "what to give", "fields and defaults (override any)"), rows)


GENERATORS = {
    "algorithms": algorithms,
    "links": links,
    "utilities": utilities,
    "teacher": teacher,
    "evaluation": evaluation,
    "environments": environments,
}


def render(markdown: str) -> str:
    """The page with every marker replaced by its generated block."""
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)


def on_files(files, config):
    """Every figure under results/ becomes a file of the site, at results/<same path>."""
    from mkdocs.structure.files import File

    for path in sorted(RESULTS.rglob("*.png")):
        uri = "results/" + path.relative_to(RESULTS).as_posix()
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):  # MkDocs calls hooks by this signature
    return render(markdown).replace("](../results/", "](results/")
