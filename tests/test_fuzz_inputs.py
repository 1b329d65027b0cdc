"""Fuzzed experiment files and --set values: `zopg run --dry-run` exits 0 or 2, no traceback."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import re
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zopg import cli

ROOT = Path(__file__).resolve().parents[1]

# Small valid experiments between them covering every table of the schema: sweeps, a teacher
# with a utility, per-env utility and policy, method env/link lists, nested method tables and
# several algorithms. Budgets are tiny: a dry run builds (traces) every run.
ZO = """
name = "fuzz_zo"
description = "ZPG and ZBCPG on a corridor"
seeds = 2
budget_queries = 2_000
budget_unit = "queries"
policy = "tabular"
policy_params = { init_scale = 0.0 }
include = ["tuned.toml"]

[[envs]]
id = "gridworld"
label = "corridor"
layout = ["S..G"]
horizon = 5
slip = 0.1

[[links]]
name = "bradley-terry"
scale = 1.0

[teacher]
mistake = 0.05
rationality = 2.0

[teacher.utility]
name = "waypoint-goal"
waypoint = [0, 2]

[evaluation]
points = 4
chunk_iterations = 10
episodes = 4

[methods.zpg]
algorithm = "zpg"
num_pairs = 4
num_queries = 2
two_sided = true
link = "bradley-terry"

[methods.zbcpg]
algorithm = "zbcpg"
envs = ["corridor"]
block_size = 4
num_blocks = 2
num_pairs = 2
num_queries = 2
"""

SIGN = """
name = "fuzz_sign"
seeds = 2
budget_queries = 4_000
policy = "tabular"

[[envs]]
id = "gridworld/open"
size = 3
utility = { name = "deadline", k = 4 }

[[links]]
name = "weibull"
label = "wb"
shape = 2.0

[evaluation]
points = 4
chunk_iterations = 20
threshold = 0.5

[methods.zspo]
algorithm = "zspo"
batch_size = 2
num_votes = 4

[methods.dpo-online]
algorithm = "dpo-online"
links = ["wb"]
num_pairs = 8
num_queries = 2
num_eval_pairs = 16
"""

REFERENCE = """
name = "fuzz_reference"
seeds = 2
budget_queries = 2_000
policy = "tabular"

[[envs]]
id = "gridworld/cliff-4x6"
policy = "tabular"
policy_params = { init_scale = 0.1 }

[[links]]
name = "thurstone"

[evaluation]
points = 4
chunk_iterations = 5

[methods.rm-ppo]
algorithm = "rm-ppo"
num_pairs = 8
num_queries = 2
buffer_size = 64
reward_model = { num_steps = 5, batch_size = 8 }

[methods.rm-ppo.ppo]
num_trajectories = 8

[methods.es]
algorithm = "es"
num_iterations = 5
population_size = 4
sigma = 0.1
"""

SWEEP = """
name = "fuzz_sweep"
seeds = 2
budget_queries = 1_000
policy = "tabular"

[[envs]]
id = "gridworld/open-5x5"

[[links]]
name = "linear"
c = 2.0

[evaluation]
points = 4
chunk_iterations = 10

[methods.zpg]
algorithm = "zpg"
num_pairs = 2
num_queries = 2

[[sweep]]
field = "envs.0.slip"
values = [0.0, 0.2]
label = "slip"

[[sweep]]
field = "methods.zpg.num_queries"
values = [2]
"""

# A tuned-settings fragment (zopg tune) beside every fuzzed file; fuzz_zo includes it.
FRAGMENT = """
[provenance]
tuned_by = "zopg tune"

[methods.zpg]
step_size = 0.05
"""

CONTROL = """
name = "fuzz_control"
seeds = 2
budget_queries = 600
policy = "mlp"
policy_params = { hidden_sizes = [4] }

[[envs]]
id = "gymnax/CartPole-v1"
horizon = 50

[[links]]
name = "bradley-terry"
scale = 20.0

[teacher]
utility = { name = "action-switches", c = 0.25 }

[evaluation]
points = 4
chunk_iterations = 10
episodes = 4

[methods.zpg]
algorithm = "zpg"
num_pairs = 2
num_queries = 5
optimizer = "adam"

[methods.ppo]
algorithm = "ppo"
num_iterations = 3
num_trajectories = 4
value_hidden_sizes = [4]
"""

BASES = {
    "zo": tomllib.loads(ZO),
    "sign": tomllib.loads(SIGN),
    "reference": tomllib.loads(REFERENCE),
    "sweep": tomllib.loads(SWEEP),
    # Slow profile only: four runs of a real benchmark (about 3 s per dry run), and gymnax
    # (seconds to import) with an MLP policy and a Monte Carlo evaluation.
    "quick": tomllib.loads((ROOT / "benchmarks" / "quick_gridworld.toml").read_text("utf-8")),
    "control": tomllib.loads(CONTROL),
}
FAST_BASES = ("zo", "sign", "reference", "sweep")

# -- a tiny TOML writer: every table inline, so any dict (any key, any nesting) is expressible --

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def toml_key(key: str) -> str:
    return key if BARE_KEY.fullmatch(key) else toml_string(key)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(data: dict) -> str:
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in data.items())


def comparable(value):
    """The value with NaN made equal to itself, to check that the writer round-trips."""
    if isinstance(value, float) and math.isnan(value):
        return "<nan>"
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    return value


# -- strategies ---------------------------------------------------------------------------------

# Characters that trip parsers and messages: controls, quotes, separators of our own formats
# (".", "/", "=", "__"), non-ASCII digits that str.isdigit accepts, combining marks, RTL text,
# zero-width and non-breaking spaces, astral-plane emoji. No surrogates: TOML files are UTF-8.
ALPHABET = (
    "az AZ09_-.,/=:#[]{}'\"\\\t\n\r\x00\x1b\x7féßøΩσ∞²³½٣३一𝟘\u0301\u200b\u200d\u00a0\u202e\ufeff🙂"
)
texts = st.text(alphabet=st.sampled_from(ALPHABET), max_size=12)
odd_strings = st.sampled_from(
    ["", " ", "zpg", "es", "tabular", "mlp", "gaussian", "bradley-terry", "hard", "weibull",
     "gridworld", "gridworld/open-5x5", "gymnax/CartPole-v1", "a/b", "a__b", "nan", "inf",
     "judged_trajectories", "deadline", "S..G", "ünïcødé", "🙂", "\x00", "1e400"]
)  # fmt: skip
edge_ints = st.sampled_from(
    [0, -1, 1, 2, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 10**30, -(10**30), 10**400]
)
floats = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-320, 1e308, 0.5, -2.5]),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(texts, odd_strings, st.booleans(), st.integers(-10, 1000), edge_ints, floats)
keys = st.one_of(
    st.sampled_from(["extra", "nmae", "seed", "Name", "id", "name", "algorithm", "num_pairs",
                     "utility", "label", "values", "include", "tune", "provenance", "ünïcødé",
                     "", " ", "a.b", "🙂"]),
    texts,
)  # fmt: skip
values = st.one_of(
    scalars,
    # Extremes again, so that most leaves meet them next to their own type.
    edge_ints,
    floats,
    st.lists(scalars, max_size=3),
    st.dictionaries(keys, scalars, max_size=2),
    st.lists(st.dictionaries(keys, scalars, max_size=2), min_size=1, max_size=2),
)


def node_paths(node, prefix=()) -> list[tuple]:
    """The path (keys and indices) of every value below `node`."""
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        return []
    found = []
    for key, child in items:
        found.append((*prefix, key))
        found.extend(node_paths(child, (*prefix, key)))
    return found


def table_paths(node, prefix=()) -> list[tuple]:
    """The path of every table (dict), the top level included."""
    return [()] + [p for p in node_paths(node, prefix) if isinstance(lookup(node, p), dict)]


def lookup(node, path):
    for key in path:
        node = node[key]
    return node


@st.composite
def mutated_files(draw, bases):
    """(base name, mutated data, [(kind, path, old value, new value)]): one or two replaced,
    deleted or added keys (an added key that exists is a replaced one)."""
    name = draw(st.sampled_from(bases))
    data = copy.deepcopy(BASES[name])
    mutations = []
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(("replace", "replace", "delete", "add")))
        if kind == "add":
            table = lookup(data, where := draw(st.sampled_from(table_paths(data))))
            key = draw(keys)
            old = table.get(key)
            table[key] = new = draw(values)
            mutations.append(("add" if old is None else "replace", (*where, key), old, new))
            continue
        candidates = node_paths(data)
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent = lookup(data, path[:-1])
        old, new = parent[path[-1]], None
        if kind == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = new = draw(values)
        mutations.append((kind, path, old, new))
    return name, data, mutations


def set_paths(base: dict) -> st.SearchStrategy[str]:
    """--set paths: every path of the base (valid or not to set) and some that cannot exist."""
    valid = [".".join(str(k) for k in p) for p in node_paths(base)]
    invalid = ["nope", "envs.9.slip", "envs.-1.slip", "envs.².slip", "envs.٣.slip", "envs.x",
               "name.x", "methods.nope.algorithm", "sweep.0.values", "teacher.utility.name",
               "", ".", "..", "a..b", "evaluation.threshold", "seeds", "budget_unit"]  # fmt: skip
    parts = st.one_of(keys, st.sampled_from(["0", "1", "envs", "methods"]))
    dotted = st.lists(parts, min_size=1, max_size=3).map(".".join)
    # Hypothesis favours the first branch and the simplest values (an empty path): the valid
    # paths come first and twice, so that most cases reach the deeper checks.
    return st.one_of(
        st.sampled_from(valid),
        st.sampled_from(valid),
        st.sampled_from(invalid),
        dotted,
        st.text(alphabet=st.sampled_from(ALPHABET), min_size=1, max_size=12),
    )


value_texts = st.one_of(
    st.sampled_from(["2", "0.1", "nan", "inf", "-inf", "+inf", "1e400", "-1e400", "1e-400",
                     "[1, 2]", "{a = 1}", "", '""', "true", "false", "0", "-1", "10**30",
                     "1000000000000000000000000000000", "0x10", "1_000", "0.5", '"é"', "[]",
                     "{}", "[[1]]", "{name = 'hard'}", "'bradley-terry'", "tabular", "[{}]",
                     "1979-05-27", "é", "🙂", "\x00", "1\nw = 2", "= 1", "[1, 'a']"]),
    texts,
    scalars.map(toml_value),
)  # fmt: skip


@st.composite
def set_overrides(draw, bases):
    """(base name, [PATH=VALUE or a malformed assignment], --seeds or None)."""
    name = draw(st.sampled_from(bases))
    assignments = []
    for _ in range(draw(st.integers(1, 2))):
        path = draw(set_paths(BASES[name]))
        if draw(st.integers(0, 9)) == 0:
            assignments.append(path)  # no "=": malformed
        else:
            assignments.append(f"{path}={draw(value_texts)}")
    # Mostly none: a bad --seeds is refused before any --set is looked at.
    seeds = None
    if draw(st.integers(0, 4)) == 0:
        seeds = draw(st.sampled_from([1, 3, 10**9, 0, -1]))
    return name, assignments, seeds


@st.composite
def mutated_bytes(draw, bases):
    """A base written out as UTF-8, then cut short, or with bytes (invalid UTF-8 included) or
    a long integer spliced in at a random place: what a damaged or hand-edited file looks like."""
    content = to_toml(BASES[draw(st.sampled_from(bases))]).encode("utf-8")
    at = draw(st.integers(0, len(content)))
    kind = draw(st.sampled_from(("cut", "insert", "replace")))
    if kind == "cut":
        return content[:at]
    spliced = draw(
        st.one_of(
            st.binary(max_size=6),
            st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\n[x]\n", b"9" * 5000]),
            texts.map(lambda t: t.encode("utf-8")),
        )
    )
    end = at if kind == "insert" else at + draw(st.integers(0, 8))
    return content[:at] + spliced + content[end:]


# -- the property -------------------------------------------------------------------------------


def dry_run(content: dict | bytes, args=(), fragment: str = FRAGMENT) -> tuple[int, str, str]:
    """`zopg run FILE --dry-run` in process on the data (or the file's raw bytes), with the
    fragment beside it as tuned.toml: (exit code, stderr, the file's path)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tuned.toml").write_text(fragment, encoding="utf-8")
        path = Path(tmp) / "experiment.toml"
        if isinstance(content, dict):
            text = to_toml(content)
            # The writer must give back exactly the mutated data, or the case tests nothing.
            assert comparable(tomllib.loads(text)) == comparable(content)
            content = text.encode("utf-8")
        path.write_bytes(content)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["run", str(path), "--dry-run", "--out", str(Path(tmp) / "out"), *args])
    return code, stderr.getvalue(), str(path)


def spellings(segment) -> list[str]:
    """How a message may spell one path segment: as is or escaped as repr does (odd characters,
    or a key inside a quoted list); a blank key only quoted. Indices name nothing."""
    if not isinstance(segment, str):
        return []
    if not segment.strip():
        return [repr(segment)]
    return [segment, repr(segment)[1:-1]]


def expected_names(kind: str, path: tuple, old, new) -> list[str]:
    """Text of which a message about this mutation must contain one piece.

    An added key must be named itself. A replaced value is named by its key or by the table
    (or array) holding it, since a bad value may be refused where it is used, but a message
    about another table does not count; a table replaced by another may be refused for a key
    of the new one ("unknown option(s) ['x'] for policy ..."). A deleted key likewise, or by its
    old value, since a deletion may break a reference to it (a method's `links` list naming a
    deleted label). Under [[sweep]], a swept value is refused where it is set: "(at the sweep
    point ...)".
    """
    key = path[-1]
    if kind == "add" and isinstance(key, str) and key.strip():
        return spellings(key)
    tables = [k for k in path[:-1] if isinstance(k, str)]
    names = spellings(key) + (spellings(tables[-1]) if tables else [])
    if kind == "delete" and isinstance(old, str | int | float):
        names.append(repr(old))
    if isinstance(new, dict):
        names.extend(n for k in new for n in spellings(k))
    if path[0] == "sweep":
        names.append("sweep")
    return names


def check_outcome(code: int, stderr: str, source: str, names: list[str]) -> None:
    """Exit 0, or 2 with one `zopg: error:` message that names the file and contains one of
    `names` (none to check when empty)."""
    assert code in (0, 2), f"exit {code}; a traceback is a bug:\n{stderr}"
    if code == 0:
        return
    assert stderr.startswith("zopg: error: "), stderr
    assert "Traceback" not in stderr, stderr
    if "memory limit" in stderr:
        # The memory check (zopg.experiments.memory) names the run and its seeds: whichever
        # field made the run too big, the estimate is what is reported.
        assert "seeds = " in stderr, stderr
        return
    if not stderr.startswith("zopg: error: --se"):
        # A malformed --set or --seeds is about the command line, not the file.
        assert source in stderr, f"the message does not name the file: {stderr}"
    if names:
        assert any(n in stderr for n in names), f"the message names none of {names}: {stderr}"


def check_file_case(case) -> None:
    _, data, mutations = case
    code, stderr, source = dry_run(data)
    names = [n for mutation in mutations for n in expected_names(*mutation)]
    check_outcome(code, stderr, source, names)


def check_set_case(case) -> None:
    base, assignments, seeds = case
    args = [f"--set={a}" for a in assignments]
    names = []
    for assignment in assignments:
        if "=" not in assignment:
            names.append(f"--set {assignment!r}")
            continue
        # The path itself, or (as for a file) its key or the table holding it, or its first
        # part refused as an unknown top-level key (--set creates the tables on its way).
        path = assignment.split("=", 1)[0].strip()
        first = path.split(".")[0]
        names += [f"--set {path}", f": {first}: unknown key", f": {first!r}: unknown key"]
        keys = [k for k in path.split(".") if not k.isdecimal()] or [""]
        names.extend(n for k in keys[-2:] for n in spellings(k))
    if seeds is not None:
        args += ["--seeds", str(seeds)]
        names.append("seeds")
    code, stderr, source = dry_run(BASES[base], args=args)
    check_outcome(code, stderr, source, names)


def check_bytes_case(content: bytes) -> None:
    code, stderr, source = dry_run(content)
    check_outcome(code, stderr, source, [])


FAST = settings(max_examples=30, deadline=None, derandomize=True, database=None)
SLOW = settings(max_examples=500, deadline=None, database=None)


@FAST
@given(mutated_files(FAST_BASES))
def test_mutated_files_exit_0_or_2(case):
    check_file_case(case)


@FAST
@given(set_overrides(FAST_BASES))
def test_set_overrides_exit_0_or_2(case):
    check_set_case(case)


@FAST
@given(mutated_bytes(FAST_BASES))
def test_mutated_bytes_exit_0_or_2(content):
    check_bytes_case(content)


@pytest.mark.slow
@SLOW
@given(mutated_files(tuple(BASES)))
def test_mutated_files_exit_0_or_2_slow(case):
    check_file_case(case)


@pytest.mark.slow
@SLOW
@given(set_overrides(tuple(BASES)))
def test_set_overrides_exit_0_or_2_slow(case):
    check_set_case(case)


@pytest.mark.slow
@SLOW
@given(mutated_bytes(tuple(BASES)))
def test_mutated_bytes_exit_0_or_2_slow(content):
    check_bytes_case(content)


@pytest.mark.parametrize("name", sorted(BASES))
def test_bases_are_valid_and_round_trip(name):
    """Every base is a valid experiment as written by the test's TOML writer."""
    code, stderr, _ = dry_run(BASES[name])
    assert code == 0, stderr


# -- what the fuzzing found, each as its smallest case ------------------------------------------


def mutated(base: str, *changes) -> dict:
    """The base with (path, value) changes."""
    data = copy.deepcopy(BASES[base])
    for path, value in changes:
        lookup(data, path[:-1])[path[-1]] = value
    return data


HUGE = 10**400  # beyond a float
BIG = "1" + "0" * 400

# (file data, --set arguments, fragment, exit code, message pattern); exit 1 (a traceback) before.
REGRESSIONS = {
    # Unhashable names: TypeError in set() or dict lookups.
    "env id a list": (mutated("sign", (("envs", 0, "id"), [])), [], FRAGMENT, 2,
                      r"envs\[0\]\.id = \[\]: must be an environment id: .*gridworld/open-5x5"),
    "method envs [[]]": (mutated("zo", (("methods", "zbcpg", "envs"), [[]])), [], FRAGMENT, 2,
                         r"methods\.zbcpg\.envs = \[\[\]\]: must be a non-empty list of env"),
    "algorithm a table": (mutated("zo", (("methods", "zpg", "algorithm"), {})), [], FRAGMENT, 2,
                          r"methods\.zpg\.algorithm: unknown algorithm \{\}; known algorithms"),
    "link name a list": (mutated("sign", (("links", 0, "name"), [])), [], FRAGMENT, 2,
                         r"links\[0\]\.name = \[\]: allowed: bradley-terry"),
    # Ints too big for int32 (JAX's default) or for a float, used inside a trainer or env.
    "es sigma 10**30": (mutated("reference", (("methods", "es", "sigma"), 10**30)), [], FRAGMENT,
                        0, ""),
    "es sigma 10**400": (mutated("reference", (("methods", "es", "sigma"), HUGE)), [], FRAGMENT,
                         2, rf"methods\.es: sigma = {BIG}: must be in \(0, inf\)"),
    "buffer_size 2**63-1": (
        mutated("reference", (("methods", "rm-ppo", "buffer_size"), 2**63 - 1)), [], FRAGMENT, 2,
        r"methods\.rm-ppo: buffer_size = 9223372036854775807: must be an integer in "
        r"\[1, 2147483647\] \(int32\)",
    ),
    "reward model width 2**40": (
        mutated("reference", (("methods", "rm-ppo", "reward_model", "hidden_sizes"), [2**40])),
        [], FRAGMENT, 2,
        r"reward_model\.hidden_sizes = \(1099511627776,\): must be a tuple of integers in "
        r"\[1, 2147483647\]",
    ),
    "policy width 2**40": (
        mutated("zo", (("policy",), "mlp"), (("policy_params",), {"hidden_sizes": [2**40]})),
        [], FRAGMENT, 2, r"policy: hidden_sizes = \[1099511627776\]: must be integers in \[1, ",
    ),
    "init_scale 10**30": (mutated("zo", (("policy_params", "init_scale"), 10**30)), [], FRAGMENT,
                          0, ""),
    "goal_reward 10**12": (mutated("zo", (("envs", 0, "goal_reward"), 10**12)), [], FRAGMENT, 0,
                           ""),
    "goal_reward 10**400": (mutated("zo", (("envs", 0, "goal_reward"), HUGE)), [], FRAGMENT, 2,
                            rf"envs \(corridor\): goal_reward = {BIG}: must be finite"),
    "threshold 10**400": (mutated("sign", (("evaluation", "threshold"), HUGE)), [], FRAGMENT, 2,
                          rf"evaluation\.threshold = {BIG}: must be a finite number"),
    "seeds 10**400": (mutated("zo", (("seeds",), HUGE)), [], FRAGMENT, 2,
                      rf"seeds = {BIG}: must be an integer in \[1, 2147483647\]"),
    "gymnax gravity 3e9": (mutated("control", (("envs", 0, "gravity"), 3_000_000_000)), [],
                           FRAGMENT, 0, ""),
    "gymnax gravity 10**400": (mutated("control", (("envs", 0, "gravity"), HUGE)), [], FRAGMENT,
                               2, rf"gravity = {BIG}: must be a real number"),
    "gymnax max_steps 10**30": (
        mutated("control", (("envs", 0, "max_steps_in_episode"), 10**30)), [], FRAGMENT, 2,
        r"max_steps_in_episode = 10{30}: must be an integer in \[1, 2147483647\]",
    ),
    # Ran out of memory building the exact model over 2**31 steps.
    "horizon 2**31": (mutated("zo", (("envs", 0, "horizon"), 2**31)), [], FRAGMENT, 2,
                      r"horizon = 2147483648: must be an integer in \[1, 10000\]"),
    # Exit 0 but NaN utilities (inf x 0 switches), and a threshold no score ever reaches.
    "switch penalty inf": (
        mutated("zo", (("teacher", "utility"), {"name": "action-switches", "c": math.inf})), [],
        FRAGMENT, 2, r"teacher\.utility: action-switches\.c = inf: must be in \[0, inf\)",
    ),
    "threshold nan": (mutated("sign", (("evaluation", "threshold"), math.nan)), [], FRAGMENT, 2,
                      r"evaluation\.threshold = nan: must be a finite number"),
    # Exit 0, then the runs were written outside the results folder (runs/../../escape__...),
    # or failed to be written (a NUL in a file name).
    "method label ../../escape": (
        mutated("sign", (("methods",), {"../../escape": BASES["sign"]["methods"]["zspo"]})),
        [],
        FRAGMENT, 2, r"methods\.'\.\./\.\./escape': the label must be a file name",
    ),
    "link label a/b": (mutated("sign", (("links", 0, "label"), "a/b")), [], FRAGMENT, 2,
                       r"links\[0\]\.label = 'a/b': must be a file name"),
    "env label NUL": (mutated("zo", (("envs", 0, "label"), "a\x00")), [], FRAGMENT, 2,
                      r"envs\[0\]\.label = 'a\\x00': must be a name without '__'"),
    "name ..": (mutated("zo", (("name",), "..")), [], FRAGMENT, 2,
                r"name = '\.\.': must be a folder name"),
    # Exit 2, but the message named a derived field only, or a blank key not at all.
    "budget 2**31": (mutated("zo", (("budget_queries",), 2**31)), [], FRAGMENT, 2,
                     r"methods\.zpg: num_iterations = \d+: .*\(derived from budget_queries = "
                     r"2147483648\)"),
    "blank key": (mutated("zo", (("",), 1)), [], FRAGMENT, 2, r"experiment\.toml: '': unknown key"),
    # --set: int('²') after '²'.isdigit(); int() of more than 4300 digits.
    "--set index ²": (BASES["sweep"], ["--set=envs.².slip=0.1"], FRAGMENT, 2,
                      r"--set envs\.²\.slip: 'envs\.²' must index 0\.\.0"),
    "--set 5000 digits": (BASES["zo"], ["--set=seeds=" + "9" * 5000], FRAGMENT, 2,
                          r"seeds = '9+': must be an integer >= 1"),
    # include: a folder, a NUL in the name, fragments and experiments of the wrong shape.
    "include a folder": (mutated("zo", (("include",), ["."])), [], FRAGMENT, 2,
                         r"experiment\.toml: include \.: .*cannot read: .*Is a directory"),
    "include a NUL": (mutated("zo", (("include",), ["a\x00b"])), [], FRAGMENT, 2,
                      r"experiment\.toml: include a\x00b: .*cannot read: embedded null byte"),
    "fragment methods 5": (BASES["zo"], [], "methods = 5", 2,
                           r"tuned\.toml: methods: must be a table of \[methods\.LABEL\] tables"),
    "fragment method 5": (BASES["zo"], [], "methods = { zpg = 5 }", 2,
                          r"tuned\.toml: methods\.zpg: must be a table"),
    "fragment provenance 5": (BASES["zo"], [], "provenance = 5", 2,
                              r"tuned\.toml: provenance: must be a table"),
    "provenance 5": (mutated("zo", (("provenance",), 5)), [], FRAGMENT, 2,
                     r"experiment\.toml: provenance: must be a table"),
    "included method 5": (mutated("zo", (("methods", "zpg"), 5)), [], FRAGMENT, 2,
                          r"experiment\.toml: methods\.zpg: must be a table with an 'algorithm'"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression(name):
    data, args, fragment, expected_code, pattern = REGRESSIONS[name]
    code, stderr, _ = dry_run(data, args=args, fragment=fragment)
    assert code == expected_code, stderr
    assert re.search(pattern, stderr), stderr


ZO_TEXT = to_toml(BASES["zo"]).encode("utf-8")


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        # UnicodeDecodeError, and a locale's encoding instead of TOML's UTF-8.
        (ZO_TEXT + b"# \xff\n", r"not valid TOML: not UTF-8"),
        # ValueError of int() past 4300 digits, inside tomllib.
        (ZO_TEXT + b"extra = " + b"9" * 5000 + b"\n", r"not valid TOML: Exceeds the limit"),
    ],
)
def test_regression_bytes(content, pattern):
    code, stderr, _ = dry_run(content)
    assert code == 2, stderr
    assert re.search(pattern, stderr), stderr


def test_regression_brax_n_frames():
    """n_frames = 10**30 went to brax's constructor and the dry run passed."""
    data = mutated("control", (("envs",), [{"id": "brax/inverted_pendulum", "n_frames": 10**30}]))
    data["policy"] = "gaussian"
    data["methods"] = {"zpg": data["methods"]["zpg"]}
    del data["teacher"]
    code, stderr, _ = dry_run(data)
    assert code == 2, stderr
    assert re.search(r"n_frames = 10{30}: must be an integer in \[-2147483647, ", stderr), stderr
