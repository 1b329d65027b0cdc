"""The GRU and transformer token policies: the Policy contract, causal masking, sampling against
log_prob, and what each parameterisation (all, head, lora) lets an algorithm change."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from zopg import ConfigError
from zopg.envs import make
from zopg.policies import (
    FrozenParams,
    GRUPolicy,
    Policy,
    TransformerPolicy,
    flat_view,
    make_policy,
    num_params,
    trajectory_log_prob,
)
from zopg.rollout import rollout_batch

ENV_ID = "tokens/hmm-v16-l16"
NAMES = ["gru", "transformer"]
# The GRU's cases run in `make test`; the transformer's slowest (compile-bound) are marked slow.
HEAVY = ["gru", pytest.param("transformer", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def small():
    return make(ENV_ID, vocab=4, length=6)


def scaled(params, factor):
    """Larger weights, so the next-token laws are far from uniform and differences show."""
    return jax.tree_util.tree_map(lambda x: factor * x, params)


def random_tokens(key, shape, vocab):
    return jax.random.randint(key, shape, 0, vocab, jnp.int32)


# The transformer's case of the next four tests is slow (flax's eager init and apply take
# seconds); its causal masking stays in make test, and the GRU's cases keep the shared code.
@pytest.mark.parametrize("name", HEAVY)
def test_make_policy_builds_a_policy_sized_from_the_env(name, small):
    env, params = small
    policy = make_policy(name, env, params)
    assert isinstance(policy, Policy)
    assert isinstance(policy, GRUPolicy if name == "gru" else TransformerPolicy)
    assert (policy.vocab, policy.seq_len, policy.num_actions) == (4, 6, 4)
    # Hashable, and equal settings hash equal (jitted rollouts take the policy as static).
    assert hash(policy) == hash(make_policy(name, env, params))
    assert make_policy(name, env, params, parameterisation="lora", rank=2) == make_policy(
        name, env, params, parameterisation="lora", rank=2
    )


@pytest.mark.parametrize("name", NAMES)
def test_changing_a_token_changes_no_earlier_logit(name, small):
    env, params = small
    policy = make_policy(name, env, params)
    theta = scaled(policy.init(jax.random.PRNGKey(0)), 2.0)
    tokens = random_tokens(jax.random.PRNGKey(1), (6,), 4)
    # Row k: token k changed (one batched call for all six).
    changed = jnp.stack([tokens.at[k].set((tokens[k] + 1) % 4) for k in range(6)])
    # One call for both: rows of one batch go through the same arithmetic, so "unchanged"
    # can be exact.
    every = policy.sequence_log_probs(theta, jnp.concatenate([tokens[None], changed]))
    before, after = every[0], every[1:]
    for k in range(6):
        # Output j predicts token j from tokens before j: up to k nothing moves, after k it does.
        np.testing.assert_array_equal(after[k, : k + 1], before[: k + 1])
        if k < 5:
            assert np.max(np.abs(after[k, k + 1 :] - before[k + 1 :])) > 1e-4


@pytest.mark.parametrize("name", HEAVY)
def test_the_logits_at_an_observation_are_its_prefix_position(name, small):
    env, params = small
    policy = make_policy(name, env, params)
    theta = scaled(policy.init(jax.random.PRNGKey(0)), 2.0)
    tokens = random_tokens(jax.random.PRNGKey(2), (6,), 4)
    every = policy.sequence_log_probs(theta, tokens)
    before = jnp.arange(6)[:, None] > jnp.arange(6)[None, :]  # [j, i]: slot i is before j
    padded = jnp.where(before, tokens, 4)  # as the env shows it: pad from j on
    garbage = jnp.where(before, tokens, (tokens + 3) % 4)  # anything from j on
    full = jnp.broadcast_to(tokens, (6, 6))
    positions = jnp.arange(6)[:, None]
    obs = jnp.stack([jnp.concatenate([p, positions], axis=-1) for p in (padded, garbage, full)])
    got = policy.log_probs(theta, obs)  # [3, j, V]
    for variant in got:
        np.testing.assert_allclose(variant, every, rtol=1e-5, atol=1e-5)
    # Batch axes map: [2, 3, N + 1] observations give [2, 3, V].
    obs = jnp.broadcast_to(jnp.concatenate([tokens, jnp.array([3])]), (2, 3, 7))
    assert policy.log_probs(theta, obs).shape == (2, 3, 4)


@pytest.mark.parametrize("name", HEAVY)
def test_samples_follow_the_log_probs(name, small):
    env, params = small
    policy = make_policy(name, env, params)
    theta = scaled(policy.init(jax.random.PRNGKey(0)), 3.0)
    tokens = random_tokens(jax.random.PRNGKey(3), (6,), 4)
    obs = jnp.concatenate([jnp.where(jnp.arange(6) < 2, tokens, 4), jnp.array([2])])
    probs = np.exp(np.asarray(policy.log_probs(theta, obs), np.float64))
    n = 20_000
    keys = jax.random.split(jax.random.PRNGKey(4), n)
    actions, log_probs = jax.vmap(lambda k: policy.sample_and_log_prob(k, theta, obs))(keys)
    np.testing.assert_allclose(log_probs, np.log(probs)[np.asarray(actions)], rtol=1e-5, atol=1e-5)
    batch = jnp.broadcast_to(obs, (n, 7))
    got = policy.log_prob(theta, batch, actions)
    np.testing.assert_allclose(got, log_probs, rtol=1e-5, atol=1e-6)
    freq = np.bincount(np.asarray(actions), minlength=4) / n
    assert np.all(np.abs(freq - probs) <= 5 * np.sqrt(probs * (1 - probs) / n) + 1e-9)
    drawn = jax.vmap(lambda k: policy.sample(k, theta, obs))(keys)
    np.testing.assert_array_equal(drawn, actions)


@pytest.mark.parametrize("name", HEAVY)
def test_rollout_log_probs_are_the_policy_log_probs(name):
    env, params = make(ENV_ID, vocab=3, length=4, prompt_length=2)
    policy = make_policy(name, env, params, parameterisation="lora", rank=2)
    theta = scaled(policy.init(jax.random.PRNGKey(0)), 1.0)
    theta = jax.tree_util.tree_map(lambda x: x + 0.3, theta)  # B away from 0
    traj = rollout_batch(jax.random.PRNGKey(1), policy, theta, env, params, 5)
    # The jitted rollout against eager calls: equal to float32 rounding, which in the
    # transformer's attention reaches a relative 2e-5 (absolute 1.2e-5 at -1.4).
    tol = {"rtol": 3e-5, "atol": 1e-5}
    np.testing.assert_allclose(policy.log_prob(theta, traj.obs, traj.action), traj.log_prob, **tol)
    every = policy.sequence_log_probs(theta, traj.final_obs[:, :-1])
    picked = jnp.take_along_axis(every[:, 2:], traj.action[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(picked, traj.log_prob, **tol)


@pytest.mark.parametrize("name", HEAVY)
@pytest.mark.parametrize("prompt_length", [0, 2])
def test_one_pass_episode_log_probs_are_the_step_log_probs(name, prompt_length):
    """trajectory_log_prob reads each episode once (what DPO's log-ratios use); it must give
    log_prob of every step from that step's observation alone, and the same gradient."""
    env, params = make(ENV_ID, vocab=3, length=4, prompt_length=prompt_length)
    policy = make_policy(name, env, params, parameterisation="lora", rank=2)
    theta = jax.tree_util.tree_map(lambda x: x + 0.3, policy.init(jax.random.PRNGKey(0)))
    traj = rollout_batch(jax.random.PRNGKey(1), policy, theta, env, params, 6)
    one_pass = trajectory_log_prob(policy, theta, traj.obs, traj.action)
    assert one_pass.shape == traj.action.shape == (6, 4)
    # float32 over other shapes: equal to rounding (a relative 1e-5 of values near 3).
    tol = {"rtol": 3e-5, "atol": 1e-5}
    np.testing.assert_allclose(one_pass, policy.log_prob(theta, traj.obs, traj.action), **tol)
    # Episodes another policy drew (DPO scores its pairs under both θ and π_ref).
    other = rollout_batch(jax.random.PRNGKey(2), policy, scaled(theta, -2.0), env, params, 6)
    obs, action = other.obs, other.action
    np.testing.assert_allclose(
        policy.trajectory_log_prob(theta, obs, action),
        policy.log_prob(theta, obs, action),
        **tol,
    )
    grads = [
        jax.grad(lambda p, f=f: jnp.sum(f(p, obs, action)))(theta)
        for f in (policy.trajectory_log_prob, policy.log_prob)
    ]
    # float32 sums over other shapes (XLA orders them differently): agreement to about 1e-5 of
    # the largest entry of the gradient (entries reach 10), not bit for bit.
    fast, slow = (
        np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(g)]) for g in grads
    )
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-5 * float(np.max(np.abs(slow))))


def test_policies_without_a_one_pass_path_fall_back_to_log_prob():
    env, params = make("gridworld/open-5x5")
    policy = make_policy("tabular", env, params)
    theta = scaled(policy.init(jax.random.PRNGKey(0)), 3.0)
    traj = rollout_batch(jax.random.PRNGKey(1), policy, theta, env, params, 3)
    assert not hasattr(policy, "trajectory_log_prob")
    np.testing.assert_array_equal(
        trajectory_log_prob(policy, theta, traj.obs, traj.action),
        policy.log_prob(theta, traj.obs, traj.action),
    )


@pytest.mark.parametrize("parameterisation", [pytest.param("all", marks=pytest.mark.slow), "lora"])
def test_the_carried_hidden_state_rollout_is_the_prefix_rollout(parameterisation):
    """The GRU's rollout carries its hidden state (one cell step per token); the same policy
    without that path re-reads the prefix at every step. With the same key both draw the same
    tokens with the same log-probabilities, after a prompt too."""
    env, params = make(ENV_ID, vocab=5, length=6, prompt_length=3)
    policy = make_policy("gru", env, params, parameterisation=parameterisation, rank=2)
    theta = jax.tree_util.tree_map(lambda x: x + 0.2, policy.init(jax.random.PRNGKey(0)))

    @dataclasses.dataclass(frozen=True)
    class PrefixOnly(GRUPolicy):
        @property
        def carried_sampler(self):  # hasattr is False: the rollout takes the prefix path
            raise AttributeError("carried_sampler")

    fields = {f.name: getattr(policy, f.name) for f in dataclasses.fields(policy)}
    prefix_only = PrefixOnly(**fields)
    assert hasattr(policy, "carried_sampler") and not hasattr(prefix_only, "carried_sampler")
    carried = rollout_batch(jax.random.PRNGKey(3), policy, theta, env, params, 256)
    reread = rollout_batch(jax.random.PRNGKey(3), prefix_only, theta, env, params, 256)
    np.testing.assert_array_equal(carried.final_obs, reread.final_obs)
    np.testing.assert_allclose(carried.log_prob, reread.log_prob, atol=1e-5)
    assert len(np.unique(np.asarray(carried.final_obs[:, 3:-1]), axis=0)) > 100


# -- parameterisations ---------------------------------------------------------------------------

# Trainable parameters at the defaults (V 16, L 16: embedding 32, hidden 64; width 64, 2 layers).
FLAT_SIZES = {
    ("gru", "all"): 20304,
    ("gru", "head"): 64 * 16 + 16,
    ("transformer", "all"): 70288,
    ("transformer", "head"): 64 * 16 + 16,
}
# LoRA: rank × (fan in + fan out) summed over the 2-D kernels.
GRU_KERNELS = [(32, 64)] * 3 + [(64, 64)] * 3 + [(64, 16)]
TRANSFORMER_KERNELS = [(64, 192), (64, 64), (64, 128), (128, 64)] * 2 + [(64, 16)]


@pytest.mark.parametrize("name", HEAVY)
@pytest.mark.parametrize("parameterisation", ["all", "head"])
def test_flat_sizes(name, parameterisation):
    env, params = make(ENV_ID)
    policy = make_policy(name, env, params, parameterisation=parameterisation)
    theta, _ = flat_view(policy.init(jax.random.PRNGKey(0)))
    assert theta.shape == (FLAT_SIZES[name, parameterisation],)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("rank", [1, 4, 16])
def test_lora_flat_size_is_rank_times_the_kernels_sides(name, rank):
    env, params = make(ENV_ID)
    policy = make_policy(name, env, params, parameterisation="lora", rank=rank)
    kernels = GRU_KERNELS if name == "gru" else TRANSFORMER_KERNELS
    assert num_params(policy.init(jax.random.PRNGKey(0))) == rank * sum(m + n for m, n in kernels)


def leaves_by_path(tree):
    return traverse_util.flatten_dict(jax.tree_util.tree_map(np.asarray, tree))


@pytest.mark.parametrize("name", NAMES)
def test_head_changes_the_output_layer_only(name, small):
    env, params = small
    policy = make_policy(name, env, params, parameterisation="head", base_seed=3)
    theta = policy.init(jax.random.PRNGKey(0))
    assert list(theta) == ["head"] and set(theta["head"]) == {"kernel", "bias"}
    base = leaves_by_path(policy.base.tree)
    # init is the base itself; a perturbed head moves the head's weights and nothing else.
    start = leaves_by_path(policy.network_params(theta))
    assert all(np.array_equal(start[p], base[p]) for p in base)
    flat, unravel = flat_view(theta)
    moved = leaves_by_path(policy.network_params(unravel(flat + 0.5)))
    for path in base:
        assert np.array_equal(moved[path], base[path]) == (path[1] != "head"), path
    # Gradients exist for the head and only the head (what the params hold).
    tokens = random_tokens(jax.random.PRNGKey(1), (6,), 4)
    obs = jnp.concatenate([tokens, jnp.array([3])])
    grad = jax.grad(lambda t: policy.log_prob(t, obs, jnp.int32(1)))(theta)
    assert jax.tree_util.tree_structure(grad) == jax.tree_util.tree_structure(theta)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("rank", [1, 3])
def test_lora_adds_rank_r_factors_to_a_frozen_base(name, rank, small):
    env, params = small
    policy = make_policy(name, env, params, parameterisation="lora", rank=rank)
    theta = policy.init(jax.random.PRNGKey(0))
    base = leaves_by_path(policy.base.tree)
    kernels = sorted("/".join(p) for p, w in base.items() if p[-1] == "kernel" and w.ndim == 2)
    assert sorted(theta) == kernels
    for path, factors in theta.items():
        m, n = base[tuple(path.split("/"))].shape
        assert factors["a"].shape == (m, rank) and factors["b"].shape == (rank, n)
        assert not np.any(np.asarray(factors["b"]))  # B = 0: the policy starts at the base
    start = leaves_by_path(policy.network_params(theta))
    assert all(np.array_equal(start[p], base[p]) for p in base)
    flat, unravel = flat_view(theta)
    noise = jax.random.normal(jax.random.PRNGKey(1), flat.shape)
    moved = leaves_by_path(policy.network_params(unravel(flat + noise)))
    for path in base:
        delta = moved[path] - base[path]
        if "/".join(path) in kernels:
            assert np.linalg.matrix_rank(delta, tol=1e-5) == rank, path
        else:  # embeddings, positions, biases and norms stay frozen
            assert not np.any(delta), path


@pytest.mark.parametrize("name", HEAVY)
def test_a_given_base_is_where_every_parameterisation_starts(name, small):
    env, params = small
    reference = scaled(make_policy(name, env, params).init(jax.random.PRNGKey(7)), 2.0)
    tokens = random_tokens(jax.random.PRNGKey(8), (3, 6), 4)
    want = make_policy(name, env, params).sequence_log_probs(reference, tokens)
    for parameterisation in ("all", "head", "lora"):
        policy = make_policy(name, env, params, parameterisation=parameterisation, base=reference)
        theta = policy.init(jax.random.PRNGKey(0))
        got = policy.sequence_log_probs(theta, tokens)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=parameterisation)
    # The base is held by content: the same weights give equal (and equally hashed) policies.
    a = make_policy(name, env, params, parameterisation="head", base=reference)
    b = make_policy(name, env, params, parameterisation="head", base=dict(reference))
    assert a == b and hash(a) == hash(b) and isinstance(a.base, FrozenParams)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"parameterisation": "lorax"}, r"parameterisation = 'lorax': must be one of all, head, "),
        ({"parameterisation": "lora", "rank": 0}, r"rank = 0: must be an integer in \[1, "),
        ({"hidden": 0}, r"hidden = 0: must be an integer in \[1, "),
        ({"base": {"params": {}}}, r"base: must be the params of this GRUPolicy's network"),
        ({"vocab": 5}, r"unknown option\(s\) \['vocab'\] for policy 'gru'"),
    ],
)
def test_bad_options_name_the_field_and_the_rule(options, message, small):
    env, params = small
    with pytest.raises(ConfigError, match=message):
        make_policy("gru", env, params, **options)


def test_the_transformer_refuses_heads_that_do_not_divide_the_width(small):
    with pytest.raises(ConfigError, match=r"heads = 5: must divide width = 64"):
        make_policy("transformer", *small, heads=5)


@pytest.mark.parametrize("name", NAMES)
def test_sequence_policies_need_a_token_environment(name):
    env, params = make("gridworld/open-5x5")
    with pytest.raises(ConfigError, match=rf"policy '{name}' needs a token environment"):
        make_policy(name, env, params)
