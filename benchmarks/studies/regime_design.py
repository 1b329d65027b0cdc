"""The computations behind the regime layouts (issue: where reward inference fails), recorded.

Link shape: on a short risky route beside traps and a long safe route that may time out, the
two routes' exact E[u] and outcome distributions, and the probability that a teacher of each
link prefers a risky trajectory to a safe one (the win rate that win-rate learners follow).
Non-Markov: exact E[u] of the direct and the waypoint route under the waypoint utility, of
the safe and the risky route on the cliff under the deadline, and of cell policies that mix
in and out of a dead-end waypoint. Route policies are deterministic
maps from cells to actions (slip still applies); values come from zopg.exact.

The regimes that can break reward inference (science.md §9; zopg.regimes does the exact
work): link shape with stakes (a search over layouts, slips and horizons for a point where the
hard teacher's win-rate fixed point and a mis-scaled trap penalty lose >= 0.1 of the gap),
hidden context on that layout (the aggregate a link-inverting learner reads from a mixture of
two annotator types), policy richer than the reward model (the cosine of a cell-only reward
model's policy gradient with the true one), and dimension without confounds (padding leaves V
and ∇V as they are). Policies there are exact gradient ascent from the uniform policy, the
start every learner has. Writes results/regimes/design.json; trains nothing with samples (the
reward model's least-squares fit uses trajectories of a fixed seed).

    .venv/bin/python -m benchmarks.studies.regime_design
"""

from __future__ import annotations

import itertools
import sys

import jax
import jax.numpy as jnp
import numpy as np

from zopg import regimes, store
from zopg.envs import make
from zopg.exact import (
    optimal_utility_value,
    optimal_value,
    policy_value,
    utility_value,
    utility_value_fn,
)
from zopg.policies import flat_view, make_policy
from zopg.preferences import make_link, make_utility
from zopg.provenance import REPO_ROOT, environment

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3
OUT = REPO_ROOT / "results" / "regimes" / "design.json"
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


# -- link shape with stakes ----------------------------------------------------------------------

STAKES_LAYOUTS = {
    "risky-safe": LINK_SHAPE,
    "bridge-5": (".....", ".###.", "S...G", "XXXXX"),
    "bridge-7": (".......", ".#####.", "S.....G", "XXXXXXX"),
    "corridor-4": ("....", "S..G", ".XX."),
    "corridor-4-traps": ("....", "S..G", "XXXX"),
    "corridor-5": (".....", "S...G", ".XXX."),
}
STAKES_SLIPS = (0.1, 0.2, 0.3)
STAKES_HORIZONS = (5, 6, 7, 8, 9, 10, 11, 12)
STAKES_TRAP = -4.0  # the teacher's trap reward (goal 1, timeout 0), as in regime_link_shape
# A route, not hiding: the E[u] optimum must reach G at least this often at the chosen point.
STAKES_MIN_GOAL = 0.2
# No plateau: plain exact gradient ascent (step 1) from the uniform policy must reach 0.95 of the
# gap within this many steps (open-5x5 takes 143, cliff-4x6 97). A first choice without this rule
# (bridge-7, slip 0.2, horizon 11) took about 3,000: the policy learns to stay away from the
# traps and time out (0.87 of the gap, as the uniform policy falls in a trap 76% of the time)
# long before it finds the goal, and every preference learner stopped there at 500k queries.
STAKES_PLATEAU_STEPS = 300
MIS_SCALED_TRAPS = (-8.0, -6.0, -4.0, -3.0, -2.0, -1.5, -1.0, -0.75, -0.5)
STAKES_LINKS = {
    "hard": ("hard", {}),
    "sharp-bt": ("bradley-terry", {"scale": 0.1}),
    "bt-0.5": ("bradley-terry", {"scale": 0.5}),
    "bradley-terry": ("bradley-terry", {}),
    "linear": ("linear", {"c": 5.0}),  # c = the utility range, goal 1 to trap -4
}
WIN_RATE = "win-rate fixed point (online DPO at small beta; ZPG with M 1)"
ZPG_M10 = "ZPG fixed point, M 10, r_max 2 (the default; the known link, BT for the hard teacher)"
ZPG_RMAX5 = "ZPG fixed point, M 10, r_max 5 (the utility range)"
BT_REFIT = "BT reward model refitted each step (RM+PPO)"
ZSPO_BATCH = "batch win-rate fixed point, D 4 (ZSPO: sign of votes on means of 4 trajectories)"


class Scorer:
    """Exact value, normalised score and outcomes of a tabular policy on one GridWorld."""

    def __init__(self, env, params):
        self.env, self.params = env, params
        self.policy = make_policy("tabular", env, params)
        self.model = env.tabular_model(params)
        self.states = jnp.arange(env.num_states(params))
        uniform = jnp.full((len(self.states), env.num_actions), 1.0 / env.num_actions)
        self.uniform = float(policy_value(self.model, uniform))
        self.best = float(optimal_value(self.model))

    def __call__(self, theta) -> dict:
        probs = self.policy.action_probs(theta, self.states)
        value = float(policy_value(self.model, probs))
        goal, trap, timeout = (
            float(x) for x in regimes.outcome_probs(self.env, self.params, probs)
        )
        return {
            "score": (value - self.uniform) / (self.best - self.uniform),
            "value": value,
            "outcomes [goal, trap, timeout]": [goal, trap, timeout],
        }

    def fixed_point(self, matrix, **kwargs) -> dict:
        theta, norms = regimes.self_play_fixed_point(
            self.env, self.params, self.policy, matrix, **kwargs
        )
        return {**self(theta), "final_gradient_norm": float(norms[-1])}


def stakes_point(layout, slip, horizon) -> dict:
    """E[u] optimum, the hard teacher's win-rate fixed point and the optimum of the trap
    penalty -1 (what BT infers from a hard teacher, below), and their losses of the gap."""
    env, params = make(
        "gridworld", layout=list(layout), horizon=horizon, slip=slip, trap_reward=STAKES_TRAP
    )
    score = Scorer(env, params)
    values = regimes.outcome_values(1.0, STAKES_TRAP)
    optimum = score.fixed_point(regimes.difference_matrix(values))
    hard = score.fixed_point(regimes.win_matrix(values, make_link("hard")))
    mis_scaled = score.fixed_point(regimes.difference_matrix(regimes.outcome_values(1.0, -1.0)))
    plain = regimes.plain_ascent_scores(env, params, score.policy, 3 * STAKES_PLATEAU_STEPS)
    reached = np.flatnonzero(plain >= 0.95)
    return {
        "slip": slip,
        "horizon": horizon,
        "uniform_value": score.uniform,
        "optimal_value": score.best,
        "E[u] optimum": optimum,
        "hard win-rate fixed point": hard,
        "trap -1 optimum": mis_scaled,
        "loss of the fixed point": optimum["score"] - hard["score"],
        "loss of trap -1": optimum["score"] - mis_scaled["score"],
        "plain ascent steps to 0.95": int(reached[0]) if reached.size else None,
    }


def link_stakes() -> dict:
    search = []
    for (name, layout), slip, horizon in itertools.product(
        STAKES_LAYOUTS.items(), STAKES_SLIPS, STAKES_HORIZONS
    ):
        row = {"layout_name": name, **stakes_point(layout, slip, horizon)}
        search.append(row)
        print(
            f"stakes {name} slip {slip} H {horizon}: optimum {row['E[u] optimum']['score']:.3f} "
            f"(goal {row['E[u] optimum']['outcomes [goal, trap, timeout]'][0]:.2f}), loss: "
            f"fixed point {row['loss of the fixed point']:.3f}, "
            f"trap -1 {row['loss of trap -1']:.3f}; plain ascent to 0.95: "
            f"{row['plain ascent steps to 0.95']} steps"
        )
    eligible = [
        r
        for r in search
        if r["E[u] optimum"]["outcomes [goal, trap, timeout]"][0] >= STAKES_MIN_GOAL
        and r["plain ascent steps to 0.95"] is not None
        and r["plain ascent steps to 0.95"] <= STAKES_PLATEAU_STEPS
    ]
    chosen = max(eligible, key=lambda r: min(r["loss of the fixed point"], r["loss of trap -1"]))
    layout = STAKES_LAYOUTS[chosen["layout_name"]]
    env, params = make(
        "gridworld",
        layout=list(layout),
        horizon=chosen["horizon"],
        slip=chosen["slip"],
        trap_reward=STAKES_TRAP,
    )
    score = Scorer(env, params)
    values = regimes.outcome_values(1.0, STAKES_TRAP)
    optimum = score.fixed_point(regimes.difference_matrix(values))["score"]
    fixed_points = {}
    for teacher, (name, kw) in STAKES_LINKS.items():
        link = make_link(name, **kw)
        prob = regimes.win_matrix(values, link)
        read = link if link.invertible else make_link("bradley-terry")
        rows = {
            WIN_RATE: score.fixed_point(prob),
            ZPG_M10: score.fixed_point(regimes.inverted_matrix(prob, read, 2.0, num_votes=10)),
            ZPG_RMAX5: score.fixed_point(regimes.inverted_matrix(prob, read, 5.0, num_votes=10)),
            BT_REFIT: score.fixed_point(prob, refit=True),
            ZSPO_BATCH: score.fixed_point(regimes.batch_win_matrix(values, link, 4), batch_size=4),
        }
        for row in rows.values():
            row["loss"] = optimum - row["score"]
        fixed_points[teacher] = rows
        print(f"stakes, {teacher}: " + ", ".join(f"{r['score']:.3f}" for r in rows.values()))
    mis_scaled = {
        str(trap): score.fixed_point(regimes.difference_matrix(regimes.outcome_values(1.0, trap)))
        for trap in MIS_SCALED_TRAPS
    }
    losing = [float(t) for t, r in mis_scaled.items() if optimum - r["score"] >= 0.1]
    return {
        "rule": (
            f"teacher's utility goal 1, trap {STAKES_TRAP}, timeout 0; search every layout, slip "
            "and horizon below; among the points whose E[u] optimum (exact gradient ascent from "
            f"the uniform policy) reaches G with probability >= {STAKES_MIN_GOAL} (a route, not "
            "hiding from the traps) and where plain exact gradient ascent (step 1) from the "
            f"uniform policy reaches 0.95 of the gap within {STAKES_PLATEAU_STEPS} steps (no "
            "plateau to cross first), choose the one where the smaller of two losses of the gap "
            "is largest: the hard teacher's win-rate fixed point, and the optimum of the trap "
            "penalty -1 (a BT fit to a hard teacher's outcome comparisons has no finite optimum; "
            "the direction it grows in is the max-margin one, equal margins goal-timeout-trap: "
            "goal +1, trap -1)"
        ),
        "win-rate fixed point": (
            "exact gradient ascent of E_{o~pi_theta, o'~pi_theta_bar} sigma(u_o - u_o') with "
            "theta_bar = stop_gradient(theta) (Adam 0.1, 1500 steps), the limit online DPO at "
            "small beta and ZPG with one vote per pair follow"
        ),
        "layouts": {k: list(v) for k, v in STAKES_LAYOUTS.items()},
        "chosen": {
            "layout_name": chosen["layout_name"],
            "layout": list(layout),
            "slip": chosen["slip"],
            "horizon": chosen["horizon"],
            "trap_reward": STAKES_TRAP,
            "E[u] optimum score": optimum,
            "E[u] optimum": chosen["E[u] optimum"],
            "plain ascent steps to 0.95": chosen["plain ascent steps to 0.95"],
            "fixed points by teacher": fixed_points,
            "loss of the win-rate fixed point by teacher": {
                k: v[WIN_RATE]["loss"] for k, v in fixed_points.items()
            },
            "mis-scaled optimum by trap penalty": mis_scaled,
            "trap penalties in [-8, -0.5] whose optimum loses >= 0.1": losing,
        },
        "search": search,
    }


# -- hidden context --------------------------------------------------------------------------------

HIDDEN_TYPES = {"A (risk-averse)": -8.0, "B (indifferent to traps)": 0.0}
HIDDEN_WEIGHTS = (0.25, 0.5, 0.75)  # w = P(type A); 0.5 gives the population mean trap -4
AGGREGATE = "aggregate fixed point (ZPG, link inverted, many votes)"
HIDDEN_LINKS = {
    "bradley-terry": ("bradley-terry", {}),
    "linear": ("linear", {"c": 9.0}),  # c = type A's range, goal 1 to trap -8
}


def hidden_context(stakes: dict) -> dict:
    """On the link-stakes layout: what a learner reads from a mixture of the two types."""
    chosen = stakes["chosen"]
    types = [regimes.outcome_values(1.0, trap) for trap in HIDDEN_TYPES.values()]
    by_weight = {}
    for w in HIDDEN_WEIGHTS:
        weights = (w, 1.0 - w)
        mean_trap = sum(wk * t for wk, t in zip(weights, HIDDEN_TYPES.values(), strict=True))
        env_w, params_w = make(
            "gridworld",
            layout=chosen["layout"],
            horizon=chosen["horizon"],
            slip=chosen["slip"],
            trap_reward=mean_trap,
        )
        score = Scorer(env_w, params_w)
        mean = regimes.outcome_values(1.0, mean_trap)
        optimum = score.fixed_point(regimes.difference_matrix(mean))
        panels = {}
        for label, (name, kw) in HIDDEN_LINKS.items():
            link = make_link(name, **kw)
            prob = regimes.mixture_matrix(types, weights, link)
            aggregate = regimes.inverted_matrix(prob, link)
            trimmed = regimes.inverted_matrix(prob, link, r_max=2.0)
            panels[label] = {
                "P(row outcome preferred) [goal, trap, timeout]": prob.tolist(),
                "aggregate sigma^-1(P) [goal, trap, timeout]": aggregate.tolist(),
                "effective trap penalty sigma^-1(P(trap over timeout))": float(aggregate[1, 2]),
                AGGREGATE: score.fixed_point(aggregate),
                "aggregate fixed point trimmed at r_max 2 (ZPG's default)": score.fixed_point(
                    trimmed
                ),
                "BT reward model refitted each step": score.fixed_point(prob, refit=True),
                "win-rate fixed point (online DPO small beta, ZPG M 1)": score.fixed_point(prob),
                ZSPO_BATCH: score.fixed_point(
                    sum(
                        w * regimes.batch_win_matrix(t, link, 4)
                        for w, t in zip(weights, types, strict=True)
                    ),
                    batch_size=4,
                ),
            }
            for result in list(panels[label].values()):
                if isinstance(result, dict) and "score" in result:
                    result["loss"] = optimum["score"] - result["score"]
        by_weight[str(w)] = {
            "population mean trap": mean_trap,
            "E[u] optimum (u = mean utility)": optimum,
            "by link": panels,
        }
        print(
            f"hidden context w {w}: optimum {optimum['score']:.3f}; "
            + "; ".join(f"{k}: aggregate {v[AGGREGATE]['score']:.3f}" for k, v in panels.items())
        )
    return {
        "layout": chosen["layout"],
        "slip": chosen["slip"],
        "horizon": chosen["horizon"],
        "types (trap reward; goal 1, timeout 0)": HIDDEN_TYPES,
        "rule": (
            "each query is answered by type A with probability w, by type B otherwise, unseen; "
            "P(vote = 1) = w sigma(Delta_A) + (1 - w) sigma(Delta_B); scored by the population's "
            "mean utility. A learner that inverts the link reads sigma^-1 of that, which is "
            "w Delta_A + (1 - w) Delta_B only for the linear link (inside its range, c = 9). "
            "Fixed points as in link_stakes; the BT reward model is the outcome reward of "
            "maximum BT likelihood on the current policy's pairs, refitted every step"
        ),
        "experiment weight": 0.5,
        "by weight w (P(type A))": by_weight,
    }


# -- policy richer than the reward model ---------------------------------------------------------


def richer_policy() -> dict:
    """Dead end with the waypoint bit in the observation: the cosine of a reward model's policy
    gradient with the true ∇V_u, for a reward model of the cell or of the observation."""
    waypoint = make_utility("waypoint-goal", waypoint=(0, 1))
    fields = {"layout": list(DEAD_END), "horizon": 12, "slip": 0.1}
    rows = {}
    for label, observe, cell_only in (
        ("policy (bit, cell), reward model (cell, a) [the regime]", True, True),
        ("policy (bit, cell), reward model (bit, cell, a) [control arm]", True, False),
        ("policy (cell), reward model (cell, a) [the compatible critic]", False, True),
    ):
        extra = {"observe_visited": [0, 1]} if observe else {}
        env, params = make("gridworld", **fields, **extra)
        utility = waypoint.bind(env, params)
        policy = make_policy("tabular", env, params)
        value = utility_value_fn(env, params, utility, policy)
        theta = policy.init(jax.random.key(0))
        points = {}
        for step in range(101):
            if step in (0, 20, 50, 100):
                cosine = regimes.gradient_cosine(env, params, policy, theta, utility, cell_only)
                points[str(step)] = {"value": float(value(theta)), "cosine": cosine}
            grad = jax.grad(value)(theta)
            theta = jax.tree_util.tree_map(lambda a, g: a + 1.0 * g, theta, grad)
        rows[label] = points
        print(
            f"richer policy, {label}: "
            + ", ".join(f"{k}: {v['cosine']:.3f}" for k, v in points.items())
        )
    env, params = make("gridworld", **fields, observe_visited=[0, 1])
    return {
        "layout": list(DEAD_END),
        "horizon": 12,
        "slip": 0.1,
        "waypoint": [0, 1],
        "optimum (policy of bit and cell)": float(
            optimal_utility_value(env, params, waypoint.bind(env, params))
        ),
        "cell-policy ceiling": "non_markov.dead_end_waypoint: best cell policy of the family",
        "rule": (
            "r fitted by least squares of u(tau) on the trajectory's (state or cell, action) "
            "counts of 100,000 trajectories of the policy (seed 0; the compatible-critic "
            "projection), then the exact gradient of the policy's value under r against the "
            "exact gradient of E[u]; at exact gradient-ascent steps 0 (uniform), 20, 50 and 100 "
            "on E[u] (step size 1)"
        ),
        "cosine by step": rows,
    }


# -- dimension without confounds -----------------------------------------------------------------

DIMENSIONS = (100, 200, 400, 800, 1600, 3200)


def dimension_padded() -> dict:
    """open-5x5 (d = 100) padded to d: V and ∇V on the logits at a random θ stay the same."""
    env, params = make("gridworld/open-5x5")
    model = env.tabular_model(params)
    states = jnp.arange(env.num_states(params))
    rows = {}
    for d in DIMENSIONS:
        policy = make_policy("tabular", env, params, pad_to=d)
        theta = policy.init(jax.random.key(0))
        theta["logits"] = jax.random.normal(jax.random.key(1), theta["logits"].shape)

        def value(p, policy=policy):
            return policy_value(model, policy.action_probs(p, states))

        grad = jax.grad(value)(theta)
        rows[str(d)] = {
            "d": int(flat_view(theta)[0].shape[0]),
            "value": float(value(theta)),
            "grad_norm_logits": float(jnp.linalg.norm(grad["logits"])),
            "grad_norm_pad": float(jnp.linalg.norm(grad["pad"])),
        }
    return {
        "env": "gridworld/open-5x5",
        "horizon": params.horizon,
        "rule": "policy_params.pad_to = d; logits N(0, 1) from key 1, pad at its init (zeros)",
        "by d": rows,
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
        **environment(),
    }
    stakes = link_stakes()
    report["link_stakes"] = stakes
    report["hidden_context"] = hidden_context(stakes)
    report["richer_policy"] = richer_policy()
    report["dimension_padded"] = dimension_padded()
    for row in grid:
        w = row["win_rate_of_risky_over_safe"]
        print(
            f"slip {row['slip']} trap {row['trap_reward']} H {row['horizon']}: "
            f"E risky - safe {row['risky_minus_safe']:+.3f}; win rate of risky: "
            + " ".join(f"{k} {v:.3f}" for k, v in w.items())
        )
    print(report["non_markov"])
    store.write_json_atomic(OUT, report)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
