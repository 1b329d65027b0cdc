"""The docs and the README say what the code does: every Python block runs, every `zopg` command
in a shell block parses with the CLI's own parser, every `make` target exists, every relative
link points to a file, and the site builds with `mkdocs build --strict`."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from zopg.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def blocks(language: str) -> list[tuple[str, str]]:
    """(page:index, code) of every fenced block in `language` on the pages."""
    found = []
    for page in PAGES:
        for i, match in enumerate(FENCE.finditer(page.read_text())):
            if match.group(1) == language:
                found.append((f"{page.relative_to(ROOT)}:{i}", match.group(2)))
    return found


def shell_commands(code: str) -> list[list[str]]:
    """The commands of a shell block: comments dropped, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            commands.append(shlex.split(line))
    return commands


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", text, re.M))


@pytest.mark.parametrize(("where", "code"), blocks("python"), ids=lambda x: x[:40])
def test_every_python_block_runs(where, code):
    # Each block runs on its own, in a fresh namespace, as a reader would paste it.
    exec(compile(code, where, "exec"), {"__name__": "__docs__"})


@pytest.mark.parametrize(("where", "code"), blocks("bash"), ids=lambda x: x[:40])
def test_every_shell_command_is_real(where, code):
    parser, targets = build_parser(), make_targets()
    for words in shell_commands(code):
        program = Path(words[0]).name
        if program == "zopg":
            # parse_args exits with 2 on an unknown command, flag or missing value (with 0 after
            # printing --version or --help, which is fine).
            try:
                parser.parse_args(words[1:])
            except SystemExit as stop:
                assert stop.code == 0, (where, words)
        elif program == "make":
            named = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
            assert set(named) <= targets, (where, named)


def full_experiments() -> list[tuple[str, str]]:
    """The TOML blocks that are whole experiment files (they set `name`), not fragments; a
    `# file:` block of docs/extending.md needs its package and is run by test_extending.py."""
    return [
        (where, code)
        for where, code in blocks("toml")
        if re.search(r"^name = ", code, re.M) and not code.startswith("# file:")
    ]


@pytest.mark.parametrize(("where", "code"), full_experiments(), ids=lambda x: x[:40])
def test_every_experiment_file_shown_is_valid(where, code, tmp_path):
    from zopg.experiments import load_experiment

    path = tmp_path / "shown.toml"
    path.write_text(code)
    load_experiment(path)  # every key and value checked, every run built; nothing compiles


def test_generated_reference_lists_every_config_field():
    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    try:
        import reference
    finally:
        sys.path.pop(0)
    from zopg.algorithms import registry

    page = reference.render((ROOT / "docs" / "experiment-file.md").read_text())
    assert "<!-- reference:" not in page
    for name, algo in registry.ALGORITHMS.items():
        assert f"### `{name}`" in page
        for row in algo.config.field_docs():
            assert f"| `{row.path}` |" in page, (name, row.path)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_point_to_files(page):
    for target in LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_the_site_builds_without_a_warning(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING" not in result.stderr, result.stderr[-3000:]
    assert (tmp_path / "science" / "index.html").exists()


REPO_PATH = re.compile(r"(?<!former )`((?:benchmarks|zopg|tests|results|docs)/[\w./*-]+)`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_repository_path_named_exists(page):
    """A path in backticks (`zopg/store.py`, `benchmarks/rates/*.toml`) names a file or folder of
    the repository as it is now; placeholders in capitals (`benchmarks/NAME.toml`) are skipped."""
    for path in REPO_PATH.findall(page.read_text()):
        if re.search(r"[A-Z]{3,}", path):
            continue
        assert list(ROOT.glob(path.rstrip("/"))), f"{page.name}: `{path}` does not exist"
