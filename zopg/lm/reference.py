"""The SFT reference policy: maximum likelihood on the token environment's HMM, stored as arrays.

Every method of the token family starts from this policy and measures its KL to it (π_ref). It
is trained once, deterministically, on fresh HMM sequences at every step (an endless supply, so
nothing over-fits), and kept as a .npz of named arrays: shipped with zopg for the default
environment and policies (zopg/lm/data/), otherwise written to a user cache the first time it
is asked for ($ZOPG_CACHE, else ~/.cache/zopg). Loading never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
import zipfile
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from zopg.envs.tokens import TokenParams, hmm_sample
from zopg.errors import ConfigError, bad_value, checked_float, checked_int
from zopg.policies import SEQUENCE_POLICIES, SequencePolicy, make_policy
from zopg.store import read_json, write_bytes_atomic, write_json_atomic

SHIPPED = Path(__file__).with_name("data")
FORMAT = 1  # bumped when the file layout or the training changes meaning
# Fields of a sequence policy that say what it may change, not what network it is.
NOT_ARCHITECTURE = {"vocab", "seq_len", "parameterisation", "rank", "base", "base_seed"}


@dataclasses.dataclass(frozen=True)
class SFTSettings:
    """How the reference is trained: Adam on batches of fresh HMM sequences."""

    steps: int = 3000
    batch: int = 256
    learning_rate: float = 3e-3
    seed: int = 0

    def __post_init__(self):
        checked_int("sft.steps", self.steps, 1, 10**7)
        checked_int("sft.batch", self.batch, 1, 2**16)
        checked_float("sft.learning_rate", self.learning_rate, 0.0, 1.0, low_open=True)
        checked_int("sft.seed", self.seed, 0, 2**32 - 1)


def architecture(policy: SequencePolicy) -> dict:
    """The policy's kind and network sizes (what its "all" parameters depend on)."""
    fields = {
        f.name: getattr(policy, f.name)
        for f in dataclasses.fields(policy)
        if f.name not in NOT_ARCHITECTURE
    }
    return {"kind": type(policy).__name__, **fields}


def reference_name(env_params: TokenParams, policy: SequencePolicy, settings: SFTSettings) -> str:
    """The file name (no suffix) of a reference: readable, with a digest of everything it
    depends on, so two settings never share a file."""
    identity = {
        "format": FORMAT,
        "policy": architecture(policy),
        "env": {f: getattr(env_params, f) for f in ("vocab", "length", "prompt_length", "seed")},
        "sft": dataclasses.asdict(settings),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    p = env_params
    kind = architecture(policy)["kind"].removesuffix("Policy").lower()
    return f"sft-{kind}-v{p.vocab}-l{p.length}-p{p.prompt_length}-s{p.seed}-{digest}"


def hmm_sequences(key, env_params: TokenParams, count: int) -> jax.Array:
    """count sequences (prompt and generated part) from the environment's HMM: int32 [count,
    P + L]. The generated part continues the prompt's hidden chain: the data SFT imitates."""
    size = env_params.prompt_length + env_params.length
    u = jax.random.uniform(key, (count, size, 2))
    return jax.vmap(lambda u_i: hmm_sample(u_i, env_params.vocab, env_params.seed))(u)


def hmm_conditional_nll(env, env_params: TokenParams, tokens) -> jax.Array:
    """−log P_HMM(generated part | prompt) of each sequence [...]: the Bayes limit of what any
    reference can reach on the HMM's sequences (exact, by the forward algorithm)."""
    whole = TokenParams(
        vocab=env_params.vocab,
        length=env_params.length,
        prompt_length=env_params.prompt_length + env_params.length,
        seed=env_params.seed,
    )
    prompt = env_params.prompt_length
    log_whole = env.prompt_log_prob(whole, tokens)
    return env.prompt_log_prob(env_params, tokens[..., :prompt]) - log_whole


def sequence_nll(policy, params, env_params: TokenParams, tokens) -> jax.Array:
    """−log π(generated part | prompt) of each sequence [...] (every generated position)."""
    log_probs = policy.sequence_log_probs(params, tokens)
    picked = jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]
    generated = jnp.arange(tokens.shape[-1]) >= env_params.prompt_length
    return -jnp.sum(jnp.where(generated, picked, 0.0), axis=-1)


@partial(jax.jit, static_argnames=("policy", "env_params", "batch", "learning_rate"))
def _sft_steps(carry, keys, policy, env_params, batch: int, learning_rate: float):
    """One Adam step per key, each on `batch` fresh HMM sequences; returns the carry and each
    step's loss (NLL per generated token). Module level, so equal settings compile once."""
    optimiser = optax.adam(learning_rate)

    def loss(p, tokens):
        return jnp.mean(sequence_nll(policy, p, env_params, tokens)) / env_params.length

    def one(carry, key):
        p, opt_state = carry
        value, grad = jax.value_and_grad(loss)(p, hmm_sequences(key, env_params, batch))
        updates, opt_state = optimiser.update(grad, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), value

    return jax.lax.scan(one, carry, keys)


def train_reference(env, env_params, policy, settings: SFTSettings = SFTSettings(), log=None):
    """Train policy's "all" parameters by maximum likelihood; returns (params, record). The
    record holds the held-out NLL per generated token of the reference and of the HMM itself
    (their gap is how far SFT is from the best possible imitation) and the wall time."""
    if policy.parameterisation != "all":
        raise ConfigError(
            f"parameterisation = {policy.parameterisation!r}: the reference is trained with "
            f"'all' (the others adapt a trained base)"
        )
    start = time.perf_counter()
    init_key, data_key, test_key = jax.random.split(jax.random.PRNGKey(settings.seed), 3)
    params = policy.init(init_key)
    length = env_params.length
    carry = (params, optax.adam(settings.learning_rate).init(params))
    keys = jax.random.split(data_key, settings.steps)
    chunk = 250  # a progress line per chunk; one compiled program for every full chunk
    for first in range(0, settings.steps, chunk):
        carry, values = _sft_steps(
            carry,
            keys[first : first + chunk],
            policy,
            env_params,
            settings.batch,
            settings.learning_rate,
        )
        if log is not None:
            last = min(first + chunk, settings.steps)
            log(f"SFT step {last}/{settings.steps}: NLL {float(values[-1]):.4f} nats/token")
    params = carry[0]
    test = hmm_sequences(test_key, env_params, 4096)
    record = {
        "settings": dataclasses.asdict(settings),
        "policy": architecture(policy),
        "held_out_sequences": 4096,
        "nll_per_token": float(jnp.mean(sequence_nll(policy, params, env_params, test))) / length,
        "hmm_nll_per_token": float(jnp.mean(hmm_conditional_nll(env, env_params, test))) / length,
        "seconds": round(time.perf_counter() - start, 1),
    }
    return params, record


def save_reference(path, params, record: dict) -> Path:
    """params as named float32 arrays in a .npz (atomic), record beside it as JSON."""
    arrays = {
        "/".join(name): np.asarray(leaf, np.float32)
        for name, leaf in traverse_util.flatten_dict(params).items()
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = Path(path)
    write_json_atomic(path.with_suffix(".json"), record)
    return write_bytes_atomic(path, buffer.getvalue())


def load_reference(path, policy):
    """The params saved at path, checked against the "all" network of policy (same names and
    shapes), or a ConfigError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            flat = {tuple(name.split("/")): jnp.asarray(data[name]) for name in data.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(f"{path}: not a reference's arrays ({err}); delete it") from None
    params = traverse_util.unflatten_dict(flat)
    expected = jax.eval_shape(policy.init, jax.random.PRNGKey(0))
    if jax.tree_util.tree_map(jnp.shape, params) != jax.tree_util.tree_map(jnp.shape, expected):
        raise ConfigError(f"{path}: its arrays do not fit {architecture(policy)}; delete it")
    return params


def cache_folder() -> Path:
    """Where references trained on this machine are kept."""
    root = os.environ.get("ZOPG_CACHE") or Path.home() / ".cache" / "zopg"
    return Path(root) / "sft"


def reference_params(env, env_params, policy, settings: SFTSettings = SFTSettings(), log=None):
    """π_ref's "all" parameters for this environment and network: the shipped arrays, else the
    user cache, else trained now (minutes) and cached."""
    full = dataclasses.replace(policy, parameterisation="all", base=None)
    name = reference_name(env_params, full, settings) + ".npz"
    for folder in (SHIPPED, cache_folder()):
        if (folder / name).is_file():
            return load_reference(folder / name, full)
    if log is not None:
        log(f"training the SFT reference {name} (cached in {cache_folder()})")
    params, record = train_reference(env, env_params, full, settings, log)
    save_reference(cache_folder() / name, params, record)
    return params


def reference_record(env_params, policy, settings: SFTSettings = SFTSettings()) -> dict | None:
    """The training record of a stored reference (None when it was never trained here)."""
    full = dataclasses.replace(policy, parameterisation="all", base=None)
    name = reference_name(env_params, full, settings) + ".json"
    for folder in (SHIPPED, cache_folder()):
        if (folder / name).is_file():
            return read_json(folder / name)
    return None


def reference_policy(name, env, env_params, settings: SFTSettings = SFTSettings(), log=None, **kw):
    """(policy, ref_params): the policy `make_policy(name, env, env_params, **kw)` built on the
    SFT reference (its base for head and LoRA, its start for all), and the parameters in that
    policy's own parameterisation that stand for π_ref (its init: LoRA's B starts at 0)."""
    sizes = {k: v for k, v in kw.items() if k not in ("parameterisation", "rank")}
    full = make_policy(name, env, env_params, **sizes)
    if not isinstance(full, SequencePolicy):
        raise ConfigError(f"policy {name!r}: the SFT reference needs a token policy (gru, ...)")
    base = reference_params(env, env_params, full, settings, log)
    policy = make_policy(name, env, env_params, base=base, **kw)
    return policy, policy.init(jax.random.PRNGKey(settings.seed))


def sft_policy(env, env_params, network: str = "gru", **options):
    """The policy factory behind `policy = "sft"` in experiment files: `network` (gru or
    transformer) with its options (parameterisation, rank, sizes) built on the SFT reference,
    so every seed starts at π_ref and the KL to each seed's initial policy is the KL to it."""
    if network not in SEQUENCE_POLICIES:
        raise bad_value("sft.network", network, f"must be one of {', '.join(SEQUENCE_POLICIES)}")
    return reference_policy(network, env, env_params, **options)[0]
