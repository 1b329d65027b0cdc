"""Token policies (a GRU, a small causal transformer) whose trainable part is all, head or LoRA."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from zopg.errors import ConfigError, bad_value, checked_int
from zopg.policies.categorical import CategoricalPolicy, categorical_from_uniform

# all: every weight; head: the output layer only; lora: rank-r factors A [m, r], B [r, n] added
# to every 2-D kernel (A @ B) of a frozen base, embeddings and biases frozen.
PARAMETERISATIONS = ("all", "head", "lora")
MAX_SIZE = 2**16  # widths, ranks, vocabularies: past this a CPU cannot run the network anyway


class FrozenParams:
    """A network's weights held fixed inside a policy (NumPy arrays), hashable by their bytes.

    Jitted rollouts take the policy as a static argument, so a frozen base must hash and compare
    by content: two policies on the same base share compiled code.
    """

    def __init__(self, tree):
        self.tree = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), tree)
        digest = hashlib.sha256(str(jax.tree_util.tree_structure(self.tree)).encode())
        for leaf in jax.tree_util.tree_leaves(self.tree):
            digest.update(str(leaf.shape).encode())
            digest.update(leaf.tobytes())
        self.digest = digest.hexdigest()

    def __hash__(self) -> int:
        return hash(self.digest)

    def __eq__(self, other) -> bool:
        return isinstance(other, FrozenParams) and other.digest == self.digest

    def __repr__(self) -> str:
        size = sum(x.size for x in jax.tree_util.tree_leaves(self.tree))
        return f"FrozenParams({size} weights, sha256 {self.digest[:12]})"


class _GRUNet(nn.Module):
    vocab: int
    embed: int
    hidden: int

    @nn.compact
    def __call__(self, tokens):  # int [B, N] -> logits [B, N, vocab]
        x = nn.Embed(self.vocab + 2, self.embed, name="embed")(tokens)
        h = nn.RNN(nn.GRUCell(self.hidden, name="gru"))(x)
        return nn.Dense(self.vocab, name="head")(h)


class _Block(nn.Module):
    width: int
    heads: int
    mlp: int

    @nn.compact
    def __call__(self, x):  # [B, N, width]
        batch, size, _ = x.shape
        qkv = nn.Dense(3 * self.width, name="qkv")(nn.LayerNorm(name="norm_attn")(x))
        q, k, v = (
            part.reshape(batch, size, self.heads, self.width // self.heads)
            for part in jnp.split(qkv, 3, axis=-1)
        )
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.width // self.heads)
        # Position q sees positions k <= q only: the causal mask that keeps the prefix's
        # logits blind to the pad (and to anything else) after it.
        causal = jnp.tril(jnp.ones((size, size), bool))
        weights = jax.nn.softmax(jnp.where(causal, scores, -1e30), axis=-1)
        attended = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, size, self.width)
        x = x + nn.Dense(self.width, name="out")(attended)
        h = nn.gelu(nn.Dense(self.mlp, name="up")(nn.LayerNorm(name="norm_mlp")(x)))
        return x + nn.Dense(self.width, name="down")(h)


class _TransformerNet(nn.Module):
    vocab: int
    seq_len: int
    width: int
    layers: int
    heads: int
    mlp: int

    @nn.compact
    def __call__(self, tokens):  # int [B, N] -> logits [B, N, vocab]
        x = nn.Embed(self.vocab + 2, self.width, name="embed")(tokens)
        position = self.param("position", nn.initializers.normal(0.02), (self.seq_len, self.width))
        x = x + position[: tokens.shape[-1]]
        for i in range(self.layers):
            x = _Block(self.width, self.heads, self.mlp, name=f"block{i}")(x)
        return nn.Dense(self.vocab, name="head")(nn.LayerNorm(name="norm_out")(x))


@dataclasses.dataclass(frozen=True)
class SequencePolicy(CategoricalPolicy):
    """A causal network over the token environment's observations (zopg.envs.tokens).

    The next token's logits are the network's output at the observation's position, the
    network reading [BOS, tokens[0], ..., tokens[N - 2]] (BOS = vocab + 1, pad = vocab), so
    the output at position j sees tokens before j only. `sequence_log_probs` gives every
    position's next-token log-probabilities in one pass.

    parameterisation: what params (and so the flat view that zeroth-order methods perturb)
    hold. "all": the whole network. "head": the output layer; the rest is the frozen base.
    "lora": factors A [m, rank], B [rank, n] for every 2-D kernel W of the base, used as
    W + A @ B; B starts at 0, so init(key) is the base itself. base: the frozen weights (a
    params tree of the "all" policy, e.g. a reference model); None builds them from base_seed.
    With "all" a given base is also where init starts.
    """

    vocab: int
    seq_len: int
    parameterisation: str = "all"
    rank: int = 4
    base: Any = None
    base_seed: int = 0

    def __post_init__(self):
        for field in ("vocab", "seq_len"):
            object.__setattr__(self, field, checked_int(field, getattr(self, field), 1, MAX_SIZE))
        if self.parameterisation not in PARAMETERISATIONS:
            raise bad_value(
                "parameterisation",
                self.parameterisation,
                f"must be one of {', '.join(PARAMETERISATIONS)}",
            )
        object.__setattr__(self, "rank", checked_int("rank", self.rank, 1, MAX_SIZE))
        object.__setattr__(
            self, "base_seed", checked_int("base_seed", self.base_seed, 0, 2**32 - 1)
        )
        self._check_sizes()
        if self.base is None and self.parameterisation != "all":
            base = self._init_network(jax.random.PRNGKey(self.base_seed))
            object.__setattr__(self, "base", FrozenParams(base))
        elif self.base is not None and not isinstance(self.base, FrozenParams):
            object.__setattr__(self, "base", FrozenParams(self._checked_base(self.base)))

    @property
    def num_actions(self) -> int:
        return self.vocab

    # -- what subclasses give ---------------------------------------------------------------
    @property
    def _module(self) -> nn.Module:
        raise NotImplementedError

    def _check_sizes(self) -> None:
        """Refuse sizes the network cannot have (subclasses)."""

    # -- the network ------------------------------------------------------------------------
    def _init_network(self, key):
        return self._module.init(key, jnp.zeros((1, self.seq_len), jnp.int32))

    def _checked_base(self, base):
        expected = jax.eval_shape(self._init_network, jax.random.PRNGKey(0))
        shapes = jax.tree_util.tree_map(jnp.shape, expected)
        try:
            same = jax.tree_util.tree_map(jnp.shape, base) == shapes
        except (TypeError, ValueError):
            same = False
        if not same:
            size = sum(math.prod(s) for s in jax.tree_util.tree_leaves(shapes, is_leaf=_shape))
            raise ConfigError(
                f"base: must be the params of this {type(self).__name__}'s network with "
                f"parameterisation 'all' ({size} weights, from its init); got a different tree"
            )
        return base

    def _kernels(self) -> list[tuple[str, ...]]:
        """Paths of the base's 2-D kernels, the weights LoRA adapts."""
        flat = traverse_util.flatten_dict(self.base.tree)
        return sorted(path for path, w in flat.items() if path[-1] == "kernel" and w.ndim == 2)

    def init(self, key):
        if self.parameterisation == "all":
            if self.base is None:
                return self._init_network(key)
            return jax.tree_util.tree_map(jnp.asarray, self.base.tree)
        if self.parameterisation == "head":
            return {"head": jax.tree_util.tree_map(jnp.asarray, self.base.tree["params"]["head"])}
        flat = traverse_util.flatten_dict(self.base.tree)
        keys = jax.random.split(key, len(self._kernels()))
        params = {}
        for k, path in zip(keys, self._kernels(), strict=True):
            fan_in, fan_out = flat[path].shape
            a = jax.random.normal(k, (fan_in, self.rank)) / math.sqrt(fan_in)
            params["/".join(path)] = {"a": a, "b": jnp.zeros((self.rank, fan_out))}
        return params

    def network_params(self, params):
        """The whole network's weights that params stand for (params itself for "all")."""
        if self.parameterisation == "all":
            return params
        base = jax.tree_util.tree_map(jnp.asarray, self.base.tree)
        if self.parameterisation == "head":
            return {"params": {**base["params"], "head": params["head"]}}
        flat = traverse_util.flatten_dict(base)
        for path in self._kernels():
            factors = params["/".join(path)]
            flat[path] = flat[path] + factors["a"] @ factors["b"]
        return traverse_util.unflatten_dict(flat)

    def _sequence_logits(self, network, tokens):
        tokens = jnp.asarray(tokens, jnp.int32)
        batch = tokens.shape[:-1]
        bos = jnp.full((*batch, 1), self.vocab + 1, jnp.int32)
        inputs = jnp.concatenate([bos, tokens[..., :-1]], axis=-1).reshape(-1, self.seq_len)
        logits = self._module.apply(network, inputs)
        return logits.reshape(*batch, self.seq_len, self.vocab)

    def sequence_log_probs(self, params, tokens):
        """log π(· | tokens[..., :j]) for every j: [..., N, vocab] from tokens int [..., N]."""
        logits = self._sequence_logits(self.network_params(params), tokens)
        return jax.nn.log_softmax(logits, axis=-1)

    def trajectory_log_prob(self, params, obs, action):
        """log π(a_t | s_t) for every step of whole episodes in one pass: [..., H].

        obs int [..., H, N + 1] must be the H steps of one token-environment episode each, in
        the order a rollout records them, and action [..., H] the tokens written. The last
        step's slots with its action written at its position hold the whole sequence, and the
        network is causal, so its output at step t's position is what log_prob computes from
        step t's observation alone, at the cost of one pass instead of H
        (tests/test_sequence_policies.py checks they agree).
        """
        obs = jnp.asarray(obs, jnp.int32)
        action = jnp.asarray(action, jnp.int32)
        last = obs[..., -1, :]
        slot = jnp.arange(self.seq_len) == jnp.clip(last[..., -1:], 0, self.seq_len - 1)
        tokens = jnp.where(slot, action[..., -1:], last[..., :-1])
        every = self.sequence_log_probs(params, tokens)  # [..., N, vocab]
        position = jnp.clip(obs[..., -1], 0, self.seq_len - 1)  # [..., H]
        at = jnp.take_along_axis(every, position[..., None], axis=-2)  # [..., H, vocab]
        return jnp.take_along_axis(at, action[..., None], axis=-1)[..., 0]

    def _logits_of(self, network, obs):
        obs = jnp.asarray(obs, jnp.int32)
        every = self._sequence_logits(network, obs[..., :-1])
        position = jnp.clip(obs[..., -1], 0, self.seq_len - 1)
        return jnp.take_along_axis(every, position[..., None, None], axis=-2)[..., 0, :]

    def logits(self, params, obs):
        """The next token's logits at obs (int [..., N + 1]: the tokens, then the position)."""
        return self._logits_of(self.network_params(params), obs)

    def uniform_sampler(self, params):
        # The base and the adapters are merged once per rollout, not at every step.
        network = self.network_params(params)
        return lambda u, obs: categorical_from_uniform(
            u, jax.nn.log_softmax(self._logits_of(network, obs), axis=-1)
        )


def _shape(x) -> bool:
    return isinstance(x, tuple)


@dataclasses.dataclass(frozen=True)
class GRUPolicy(SequencePolicy):
    """Token embedding (embed wide), one GRU layer (hidden wide), a linear head."""

    embed: int = 32
    hidden: int = 64

    def _check_sizes(self) -> None:
        for field in ("embed", "hidden"):
            object.__setattr__(self, field, checked_int(field, getattr(self, field), 1, MAX_SIZE))

    @property
    def _module(self) -> nn.Module:
        return _GRUNet(vocab=self.vocab, embed=self.embed, hidden=self.hidden)

    def carried_sampler(self, params):
        """(start, sample) for rollouts that carry the hidden state: start(obs) reads BOS and
        the prefix before obs's position once; sample(h, u, obs) draws the next token from the
        head at h by inverse CDF (as uniform_sampler does) and reads it, O(1) per token instead
        of re-reading the prefix. The same log-probabilities as log_probs (tested)."""
        net = self.network_params(params)["params"]
        cell = nn.GRUCell(self.hidden)

        def read(h, token):
            x = net["embed"]["embedding"][token]
            return cell.apply({"params": net["gru"]}, h, x)[0]

        def start(obs):
            obs = jnp.asarray(obs, jnp.int32)
            h = read(jnp.zeros((self.hidden,), net["head"]["kernel"].dtype), self.vocab + 1)
            position = obs[-1]
            return jax.lax.fori_loop(
                0, self.seq_len, lambda j, h: jnp.where(j < position, read(h, obs[j]), h), h
            )

        def sample(h, u, obs):
            del obs  # everything read so far is in h
            logits = h @ net["head"]["kernel"] + net["head"]["bias"]
            action, log_prob = categorical_from_uniform(u, jax.nn.log_softmax(logits))
            return read(h, action), action, log_prob

        return start, sample


@dataclasses.dataclass(frozen=True)
class TransformerPolicy(SequencePolicy):
    """Pre-norm causal transformer: token and learned position embeddings, `layers` blocks of
    multi-head self-attention and a GELU MLP (mlp wide), a final norm and a linear head."""

    width: int = 64
    layers: int = 2
    heads: int = 4
    mlp: int = 128

    def _check_sizes(self) -> None:
        for field in ("width", "layers", "heads", "mlp"):
            object.__setattr__(self, field, checked_int(field, getattr(self, field), 1, MAX_SIZE))
        if self.width % self.heads:
            raise bad_value("heads", self.heads, f"must divide width = {self.width}")

    @property
    def _module(self) -> nn.Module:
        return _TransformerNet(
            vocab=self.vocab,
            seq_len=self.seq_len,
            width=self.width,
            layers=self.layers,
            heads=self.heads,
            mlp=self.mlp,
        )
