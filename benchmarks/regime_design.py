"""The computations behind the regime layouts (issue: where reward inference fails), recorded.

Link shape: on a short risky route beside traps and a long safe route that may time out, the
two routes' exact E[u] and outcome distributions, and the probability that a teacher of each
link prefers a risky trajectory to a safe one (the win rate that win-rate learners follow).
Non-Markov: exact E[u] of the direct and the waypoint route under the waypoint utility, of
the safe and the risky route on the cliff under the deadline, and of cell policies that mix
in and out of a dead-end waypoint. Route policies are deterministic
maps from cells to actions (slip still applies); values come from zopg.exact. Writes
results/regimes/design.json; trains nothing.

    .venv/bin/python benchmarks/regime_design.py
"""

from __future__ import annotations

import itertools
import sys

import jax.numpy as jnp
import numpy as np

try:
    from benchmarks import _report
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    import _report

from zopg.envs import make
from zopg.exact import optimal_utility_value, policy_value, utility_value
from zopg.preferences import make_link, make_utility

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3
OUT = _report.REPO_ROOT / "results" / "regimes" / "design.json"
LINK_SHAPE = (".....", ".....", "S...G", "XXXXX")
LINK_SHAPE_CHOSEN = {"slip": 0.2, "trap_reward": -4.0, "horizon": 10}
TEACHERS = {
    "bradley-terry": ("bradley-terry", {}),
    "sharp-bt": ("bradley-terry", {"scale": 0.1}),
    "linear": ("linear", {"c": 5.0}),  # c = the utility range, goal 1 to trap -4
    "hard": ("hard", {}),
}


def route(layout, choose) -> jnp.ndarray:
    """probs[s, a] of the deterministic policy choose(row, col) -> action."""
    height, width = len(layout), len(layout[0])
    probs = np.zeros((height * width, 4))
    for r, c in itertools.product(range(height), range(width)):
        probs[r * width + c, choose(r, c)] = 1.0
    return jnp.asarray(probs)


def outcomes(env, params, probs) -> list[float]:
    """[P(goal), P(trap), P(neither: timed out)] of a policy, exactly."""
    model = env.tabular_model(params)
    cells = "".join(params.layout)
    hits = []
    for kind in "GX":
        entered = jnp.asarray([c == kind for c in cells], jnp.float32)[None, None, :]
        reward = jnp.where(model.reward != 0, 1.0, 0.0) * entered
        hits.append(float(policy_value(model.replace(reward=reward), probs)))
    return [hits[0], hits[1], 1.0 - sum(hits)]


def win_rate(first, second, values, link) -> float:
    """P(a teacher with `link` prefers a trajectory of `first` to one of `second`)."""
    diff = jnp.asarray(np.subtract.outer(values, values), jnp.float32)
    return float(np.asarray(first) @ np.asarray(link.prob(diff)) @ np.asarray(second))


def risky(r, c):
    return RIGHT if r == 2 else DOWN


def safe(r, c):
    if r == 0:
        return RIGHT if c < 4 else DOWN
    if r == 1:
        return UP if c < 4 else DOWN
    return UP


def link_shape(slip, trap_reward, horizon) -> dict:
    env, params = make(
        "gridworld", layout=list(LINK_SHAPE), horizon=horizon, slip=slip, trap_reward=trap_reward
    )
    values = np.array([1.0, trap_reward, 0.0])
    routes = {
        name: outcomes(env, params, route(LINK_SHAPE, f))
        for name, f in (("risky", risky), ("safe", safe))
    }
    expected = {name: float(values @ np.array(p)) for name, p in routes.items()}
    wins = {
        teacher: win_rate(routes["risky"], routes["safe"], values, make_link(name, **kw))
        for teacher, (name, kw) in TEACHERS.items()
    }
    optimum = float(optimal_utility_value(env, params, make_utility("return")))
    return {
        "slip": slip,
        "trap_reward": trap_reward,
        "horizon": horizon,
        "outcomes [goal, trap, timeout]": routes,
        "expected_utility": expected,
        "risky_minus_safe": expected["risky"] - expected["safe"],
        "win_rate_of_risky_over_safe": wins,
        "optimal_value": optimum,
    }


def non_markov() -> dict:
    corridor = make("gridworld", layout=[".....", "S...G"], horizon=10, slip=0.1)
    waypoint = make_utility("waypoint-goal", waypoint=(0, 2))

    def direct(r, c):
        return RIGHT if r == 1 else DOWN

    def via_waypoint(r, c):
        if r == 1:
            return UP if c < 2 else RIGHT
        return RIGHT if c < 4 else DOWN

    layout = (".....", "S...G")
    out = {
        "waypoint": {
            "layout": list(layout),
            "horizon": 10,
            "slip": 0.1,
            "waypoint": [0, 2],
            "direct route": float(utility_value(*corridor, waypoint, route(layout, direct))),
            "waypoint route": float(
                utility_value(*corridor, waypoint, route(layout, via_waypoint))
            ),
            "optimum": float(optimal_utility_value(*corridor, waypoint)),
        }
    }
    cliff = make("gridworld/cliff-4x6")
    deadline = make_utility("deadline", k=8)
    cliff_layout = cliff[1].layout

    def along_row(row):
        """Up to `row`, right along it, down the last column into G."""

        def choose(r, c):
            if c == 5:
                return DOWN
            if r > row:
                return UP
            return RIGHT if r == row else DOWN

        return choose

    for name, row in (("risky route (row 2)", 2), ("safe route (row 0)", 0)):
        probs = route(cliff_layout, along_row(row))
        out.setdefault("deadline", {"k": 8, "env": "gridworld/cliff-4x6"})[name] = {
            "deadline utility": float(utility_value(*cliff, deadline, probs)),
            "return": float(utility_value(*cliff, make_utility("return"), probs)),
        }
    out["deadline"]["optimum (deadline)"] = float(optimal_utility_value(*cliff, deadline))
    out["dead_end_waypoint"] = dead_end_waypoint()
    return out


DEAD_END = ("#.###", "S...G")


def dead_end_waypoint() -> dict:
    """The waypoint in a dead end: the route enters it and leaves through the same cell, so a
    policy of the cell alone must mix there. Values of the family "up with probability p in the
    dead end's column, right elsewhere on the corridor, down in the dead end", against V* (the
    product model's optimum, over policies that see the waypoint bit)."""
    env, params = make("gridworld", layout=list(DEAD_END), horizon=12, slip=0.1)
    waypoint = make_utility("waypoint-goal", waypoint=(0, 1))
    width = len(DEAD_END[0])

    def mixing(p):
        probs = np.zeros((2 * width, 4))
        probs[:width, DOWN] = 1.0
        probs[width:, RIGHT] = 1.0
        probs[width + 1, [UP, RIGHT]] = p, 1.0 - p
        return jnp.asarray(probs)

    ps = [round(p, 2) for p in np.linspace(0.0, 1.0, 21)]
    values = {p: float(utility_value(env, params, waypoint, mixing(p))) for p in ps}
    best = max(values, key=values.get)
    uniform = jnp.full((2 * width, 4), 0.25)
    return {
        "layout": list(DEAD_END),
        "horizon": 12,
        "slip": 0.1,
        "waypoint": [0, 1],
        "value by p (up in the dead end's column)": values,
        "best p": best,
        "best cell policy of the family": values[best],
        "loop (p = 1)": values[1.0],
        "direct (p = 0)": values[0.0],
        "return of the loop (p = 1)": float(
            utility_value(env, params, make_utility("return"), mixing(1.0))
        ),
        "uniform": float(utility_value(env, params, waypoint, uniform)),
        "optimum (sees the bit)": float(optimal_utility_value(env, params, waypoint)),
    }


def main() -> int:
    grid = [
        link_shape(*p) for p in itertools.product([0.1, 0.2, 0.3], [-1.0, -2.0, -4.0], [9, 10, 12])
    ]
    chosen = next(g for g in grid if all(g[k] == v for k, v in LINK_SHAPE_CHOSEN.items()))
    report = {
        "benchmark": "regime_design",
        "description": __doc__.split("\n\n")[0],
        "link_shape": {
            "layout": list(LINK_SHAPE),
            "rule": "chosen so that E[u] prefers the safe route by >= 0.1 while a hard or sharp "
            "teacher's win rate prefers the risky one (goal 1, trap -4, linear c = 5)",
            "chosen": chosen,
            "grid": grid,
        },
        "non_markov": non_markov(),
        **_report.environment(),
    }
    for row in grid:
        w = row["win_rate_of_risky_over_safe"]
        print(
            f"slip {row['slip']} trap {row['trap_reward']} H {row['horizon']}: "
            f"E risky - safe {row['risky_minus_safe']:+.3f}; win rate of risky: "
            + " ".join(f"{k} {v:.3f}" for k, v in w.items())
        )
    print(report["non_markov"])
    _report.write_json_atomic(OUT, report)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
