"""Fine-tuning a token policy against a fixed proxy (KL-penalised REINFORCE) or on fixed pairs
(offline DPO and IPO), many runs at once: the RL and DPO arms of the over-optimisation study.

Both run R independent runs side by side (vmapped over a leading axis of their keys, their
coefficient and their data), so five seeds and three KL coefficients cost one compilation, and
both stop every `eval_every` steps to hand each run's parameters to a monitor (gold, proxy and
KL on fresh sequences): the history is the over-optimisation curve.

REINFORCE: every step draws `batch` sequences y from π, scores them by the proxy r(y), and
takes an Adam step on the score-function gradient of r(y) − β_KL Σ_j log(π / π_ref)(y_j | y_<j)
with the leave-one-out mean of the batch as baseline (Ahmadian et al. 2024's RLOO). The penalty
enters as a reward: E[∇log π(y) log(π(y)/π_ref(y))] is the gradient of KL(π ‖ π_ref), since
E[∇log π(y)] = 0, so the stopped-gradient penalty gives the exact gradient of the regularised
objective. With no discount and one reward at the end, per-token and per-sequence penalties
give the same REINFORCE gradient.

Offline DPO and IPO: Adam on labelled_loss (zopg.algorithms.dpo_losses) over minibatches drawn
with replacement from the fixed pairs, the log-ratio of a sequence being the sum over its
generated tokens of log π − log π_ref.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import optax

from zopg.algorithms.dpo_losses import labelled_loss
from zopg.errors import bad_value, checked_choice, checked_float, checked_int
from zopg.sequence_kl import next_token_log_probs, sample_sequences

MAX_GRAD_NORM = 1.0  # gradient clipping of both arms, as in most RLHF code (PPO, TRL)


@dataclasses.dataclass(frozen=True)
class ReinforceSettings:
    """KL-penalised REINFORCE with a leave-one-out baseline."""

    steps: int = 300
    batch: int = 256
    learning_rate: float = 1e-3
    eval_every: int = 25

    def __post_init__(self):
        checked_int("steps", self.steps, 1)
        checked_int("batch", self.batch, 2)  # the leave-one-out baseline needs two
        checked_float("learning_rate", self.learning_rate, 0.0, None, low_open=True)
        checked_int("eval_every", self.eval_every, 1, self.steps)


@dataclasses.dataclass(frozen=True)
class PairSettings:
    """Offline DPO or IPO on fixed labelled pairs."""

    loss: str = "sigmoid"
    steps: int = 2000
    batch: int = 64
    learning_rate: float = 1e-3
    eval_every: int = 100

    def __post_init__(self):
        checked_choice("loss", self.loss, ("sigmoid", "ipo"))
        checked_int("steps", self.steps, 1)
        checked_int("batch", self.batch, 1)
        checked_float("learning_rate", self.learning_rate, 0.0, None, low_open=True)
        checked_int("eval_every", self.eval_every, 1, self.steps)


def _optimiser(learning_rate: float) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(MAX_GRAD_NORM), optax.adam(learning_rate))


def generated_log_probs(env_params, policy, params, tokens) -> jax.Array:
    """Σ_j log π(x_j | x_<j) over the generated positions of tokens int [..., P + L]: [...]."""
    vocab, prompt = int(env_params.vocab), int(env_params.prompt_length)
    every = next_token_log_probs(policy, params, tokens, vocab)
    steps = jnp.take_along_axis(every, tokens[..., None], axis=-1)[..., 0]
    generated = jnp.arange(tokens.shape[-1]) >= prompt
    return jnp.sum(jnp.where(generated, steps, 0.0), axis=-1)


def stack_runs(trees):
    """Pytrees of one structure stacked along a new leading axis (one slice per run)."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def _history(run_segment, evaluate, state, keys, steps: int, eval_every: int, log=None):
    """Runs segments of eval_every steps and evaluates every run after each (and at step 0):
    {"step": [...], name: [[per run] per evaluation]}. evaluate(params, keys) is vmapped."""
    history: dict[str, list] = {"step": []}

    def record(step, state, key):
        history["step"].append(step)
        for name, value in evaluate(state[0], key).items():
            history.setdefault(name, []).append(jnp.asarray(value).tolist())

    eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    record(0, state, jax.vmap(lambda k: jax.random.fold_in(k, 0))(eval_keys))
    done = 0
    while done < steps:
        size = min(eval_every, steps - done)
        segment_keys = jax.vmap(lambda k, d=done: jax.random.fold_in(k, d))(keys)
        state = run_segment(state, segment_keys, size)
        done += size
        record(done, state, jax.vmap(lambda k, d=done: jax.random.fold_in(k, d))(eval_keys))
        if log is not None:
            log(f"  step {done}/{steps}")
    return state[0], history


def _side_by_side(loss, runs, ref_params, keys, evaluate, settings, log):
    """R runs from ref_params of Adam (clipped) on loss(params, key, run), run being each run's
    slice of the pytree `runs` (leading axis R), vmapped; _history's segments and evaluations."""
    optimiser = _optimiser(settings.learning_rate)

    def one_step(carry, key, run):
        params, opt_state = carry
        grads = jax.grad(loss)(params, key, run)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    @partial(jax.jit, static_argnums=2)
    def run_segment(state, segment_keys, size):
        def one_run(carry, key, run):
            step = partial(one_step, run=run)
            carry, _ = jax.lax.scan(step, carry, jax.random.split(key, size))
            return carry

        return jax.vmap(one_run)(state, segment_keys, runs)

    params = stack_runs([ref_params] * keys.shape[0])
    state = (params, jax.vmap(optimiser.init)(params))
    return _history(run_segment, evaluate, state, keys, settings.steps, settings.eval_every, log)


def reinforce_runs(
    keys,
    coefficients,
    reward: Callable,
    reward_params,
    env,
    env_params,
    policy,
    ref_params,
    monitor: Callable,
    settings: ReinforceSettings = ReinforceSettings(),
    log=None,
):
    """R runs of KL-penalised REINFORCE from ref_params. keys: R PRNG keys; coefficients: R
    values of β_KL; reward_params: a pytree with leading axis R, run r's proxy being
    reward(its slice r, tokens of shape (B, P + L)) -> (B,). monitor(params, key,
    reward_params) -> {name: scalar} is called on every run's parameters (with its proxy's) at
    step 0 and every eval_every steps. Returns (the final parameters, stacked over runs; the
    history: "step" and each monitored name as a list over evaluations of lists over runs)."""
    keys = jnp.asarray(keys)
    coefficients = jnp.asarray(coefficients, jnp.float32)

    def loss(params, key, run):
        coefficient, proxy_params = run
        # Sampled from the current policy, outside the gradient (the tokens are integers).
        current = jax.lax.stop_gradient(params)
        tokens = sample_sequences(key, env, env_params, policy, current, settings.batch)
        ref_log_p = generated_log_probs(env_params, policy, ref_params, tokens)
        log_p = generated_log_probs(env_params, policy, params, tokens)
        penalised = reward(proxy_params, tokens) - coefficient * (
            jax.lax.stop_gradient(log_p) - ref_log_p
        )
        others = (jnp.sum(penalised) - penalised) / (settings.batch - 1)
        advantage = jax.lax.stop_gradient(penalised - others)
        return -jnp.mean(advantage * log_p)

    evaluate = jax.jit(lambda params, k: jax.vmap(monitor)(params, k, reward_params))
    return _side_by_side(
        loss, (coefficients, reward_params), ref_params, keys, evaluate, settings, log
    )


def pair_runs(
    keys,
    betas,
    tokens_a,
    tokens_b,
    labels,
    env_params,
    policy,
    ref_params,
    monitor: Callable,
    settings: PairSettings = PairSettings(),
    log=None,
):
    """R runs of offline DPO (settings.loss "sigmoid") or IPO ("ipo") from ref_params. keys: R
    PRNG keys; betas: R values of β; each run's pairs: tokens_a and tokens_b, int of shape
    (R, n, P + L), with labels of shape (R, n) (1 when a was preferred, 0 when b was; a
    fraction for several votes). monitor(params, key) -> {name: scalar}, called as in
    reinforce_runs. Returns (the final parameters, stacked over runs; the history)."""
    keys = jnp.asarray(keys)
    betas = jnp.asarray(betas, jnp.float32)
    labels = jnp.asarray(labels, jnp.float32)
    if tokens_a.shape != tokens_b.shape or tokens_a.shape[:2] != labels.shape:
        raise bad_value(
            "pairs",
            f"tokens_a {tokens_a.shape}, tokens_b {tokens_b.shape}, labels {labels.shape}",
            "tokens_a and tokens_b of one shape [R, n, P + L], labels [R, n]",
        )
    ref_a = jax.vmap(partial(generated_log_probs, env_params, policy, ref_params))(tokens_a)
    ref_b = jax.vmap(partial(generated_log_probs, env_params, policy, ref_params))(tokens_b)
    count = tokens_a.shape[1]

    def loss(params, key, run):
        beta, a, b, label, base_a, base_b = run
        rows = jax.random.randint(key, (settings.batch,), 0, count)
        ratio_a = generated_log_probs(env_params, policy, params, a[rows]) - base_a[rows]
        ratio_b = generated_log_probs(env_params, policy, params, b[rows]) - base_b[rows]
        return jnp.mean(labelled_loss(settings.loss, ratio_a - ratio_b, label[rows], beta))

    runs = (betas, jnp.asarray(tokens_a), jnp.asarray(tokens_b), labels, ref_a, ref_b)
    evaluate = jax.jit(jax.vmap(monitor))
    return _side_by_side(loss, runs, ref_params, keys, evaluate, settings, log)
