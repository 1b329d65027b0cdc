"""Proxy reward models r_φ(x) of token sequences, fitted by Bradley–Terry on labelled pairs."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import zipfile
import zlib
from functools import partial
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from zopg.errors import (
    ConfigError,
    bad_value,
    checked_choice,
    checked_float,
    checked_int,
    unknown_name,
)
from zopg.store import json_text, write_bytes_atomic

# Single models, then the ensemble of several of one of them.
BASE_KINDS = ("linear-unigram", "linear-bigram", "gru-16", "gru-64")
KINDS = (*BASE_KINDS, "ensemble")
OBJECTIVES = ("mean", "min", "mean-minus-sd")
ENSEMBLE_OPTIONS = ("base", "members", "objective", "lam")
GRU_HIDDEN = {"gru-16": 16, "gru-64": 64}
GRU_EMBED = 16
MAX_TOKENS = 4096  # as the token environment's largest vocab and length
MAX_MEMBERS = 64
FORMAT = "zopg-proxy-1"  # the saved file's version, so a later layout can refuse old files


class _GRUReward(nn.Module):
    """Token embeddings, flax's GRU cell over them, a linear readout of the last hidden state."""

    vocab: int
    embed: int
    hidden: int

    @nn.compact
    def __call__(self, tokens):  # int [B, N] -> [B]
        x = nn.Embed(self.vocab, self.embed, name="embed")(tokens)
        h = nn.RNN(nn.GRUCell(self.hidden, name="gru"), name="rnn")(x)
        # A zero readout makes the untrained proxy neutral (every pair a coin flip, log-loss
        # log 2), so the first evaluation is the "knows nothing" point of the curve.
        readout = nn.Dense(1, kernel_init=nn.initializers.zeros, name="readout")
        return readout(h[:, -1, :])[:, 0]


@dataclasses.dataclass(frozen=True)
class ProxySpec:
    """What a proxy is (hashable, so jitted code can take it as a static argument).

    kind       one of KINDS. linear-unigram: Σ_j w[x_j] = w · counts(x). linear-bigram: that
               plus Σ_j B[x_j, x_j+1] over adjacent positions. gru-16 / gru-64: token
               embeddings (16 wide), a GRU of 16 / 64 hidden units, a linear readout of the
               last hidden state. ensemble: `members` models of kind `base`, each from its own
               init seed and fitted on its own bootstrap resample (Coste et al. 2024), scored
               by `objective`: the members' mean, their min, or mean − lam · sd (sd over
               members, ddof 0).
    vocab      tokens are ints in [0, vocab).
    seq_len    N, the length of every sequence scored (prompt and generated tokens).
    No kind has a bias: Bradley–Terry sees only differences r(a) − r(b), so a constant is
    never identified (and with a fixed length, neither is a common shift of the unigram weights).
    """

    kind: str
    vocab: int
    seq_len: int
    base: str = ""
    members: int = 1
    objective: str = "mean"
    lam: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise unknown_name("proxy kind", self.kind, KINDS)
        set_ = partial(object.__setattr__, self)
        set_("vocab", checked_int("vocab", self.vocab, 2, MAX_TOKENS))
        set_("seq_len", checked_int("seq_len", self.seq_len, 1, MAX_TOKENS))
        if self.kind != "ensemble":
            defaults = {"base": "", "members": 1, "objective": "mean", "lam": 0.0}
            for field, default in defaults.items():
                if getattr(self, field) != default:
                    raise bad_value(field, getattr(self, field), "only an ensemble takes it")
            return
        set_("base", checked_choice("base", self.base, BASE_KINDS))
        set_("members", checked_int("members", self.members, 2, MAX_MEMBERS))
        set_("objective", checked_choice("objective", self.objective, OBJECTIVES))
        set_("lam", checked_float("lam", self.lam, 0.0, 1e6))

    @property
    def base_kind(self) -> str:
        """The kind of one member (the kind itself for a single model)."""
        return self.base if self.kind == "ensemble" else self.kind

    @property
    def num_members(self) -> int:
        return self.members if self.kind == "ensemble" else 1

    # -- one member -------------------------------------------------------------------------
    def _gru(self) -> _GRUReward:
        return _GRUReward(vocab=self.vocab, embed=GRU_EMBED, hidden=GRU_HIDDEN[self.base_kind])

    def _member_init(self, key):
        kind = self.base_kind
        if kind.startswith("linear"):
            # Zero start: the convex BT loss has one optimum whatever the start, and zero is
            # the neutral proxy; an ensemble of linear members differs by its bootstraps.
            params = {"unigram": jnp.zeros((self.vocab,))}
            if kind == "linear-bigram":
                params["bigram"] = jnp.zeros((self.vocab, self.vocab))
            return params
        return self._gru().init(key, jnp.zeros((1, self.seq_len), jnp.int32))

    def _member_score(self, params, tokens):
        tokens = jnp.asarray(tokens, jnp.int32)
        kind = self.base_kind
        if kind.startswith("linear"):
            score = jnp.sum(params["unigram"][tokens], axis=-1)
            if kind == "linear-bigram":
                pairs = tokens[..., :-1] * self.vocab + tokens[..., 1:]
                score = score + jnp.sum(params["bigram"].reshape(-1)[pairs], axis=-1)
            return score
        batch = tokens.shape[:-1]
        flat = self._gru().apply(params, tokens.reshape(-1, self.seq_len))
        return flat.reshape(batch)

    # -- the proxy --------------------------------------------------------------------------
    def init(self, key):
        """Parameters before fitting; an ensemble's are its members' stacked on a leading axis."""
        if self.kind != "ensemble":
            return self._member_init(key)
        return jax.vmap(self._member_init)(jax.random.split(key, self.members))

    def member_scores(self, params, tokens) -> jax.Array:
        """Each member's r(x): [members, ...] for tokens int [..., seq_len] (members 1 for a
        single model)."""
        if self.kind != "ensemble":
            return self._member_score(params, tokens)[None]
        # One member after another (lax.map), not vmap: XLA's CPU batched matmuls of a
        # vmapped GRU run about twice as slow as the members' plain matmuls in turn.
        return jax.lax.map(lambda p: self._member_score(p, tokens), params)

    def score(self, params, tokens) -> jax.Array:
        """r_φ(x): [...] for tokens int [..., seq_len]; an ensemble's objective value."""
        if self.kind != "ensemble":
            return self._member_score(params, tokens)
        scores = self.member_scores(params, tokens)
        if self.objective == "min":
            return jnp.min(scores, axis=0)
        mean = jnp.mean(scores, axis=0)
        if self.objective == "mean":
            return mean
        return mean - self.lam * jnp.std(scores, axis=0)

    def to_data(self) -> dict:
        return dataclasses.asdict(self)


def make_proxy(kind: str, vocab: int, seq_len: int, **options) -> ProxySpec:
    """A proxy spec. An ensemble takes base (default 'gru-16'), members (4), objective ('mean')
    and lam (λ of mean-minus-sd, 1.0); the single kinds take no options."""
    if kind not in KINDS:
        raise unknown_name("proxy kind", kind, KINDS)
    allowed = ENSEMBLE_OPTIONS if kind == "ensemble" else ()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        takes = f"allowed: {', '.join(allowed)}" if allowed else "it takes none"
        raise ConfigError(f"unknown option(s) {unknown} for proxy kind {kind!r}; {takes}")
    if kind == "ensemble":
        objective = options.get("objective", "mean")
        options = {
            "base": "gru-16",
            "members": 4,
            "lam": 1.0 if objective == "mean-minus-sd" else 0.0,
        } | options
    return ProxySpec(kind=kind, vocab=vocab, seq_len=seq_len, **options)


# -- fitting -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FitRecord:
    """How a fit went. The first three are of spec.score at the returned parameters (an
    ensemble's objective); log-losses are the cross-entropy of the votes against
    σ(r(a) − r(b)), accuracy the share of non-tied pairs ranked the votes' way (a zero gap
    counts half); train_log_loss is over every training pair (not an ensemble member's
    bootstrap). Per member: the steps it ran, the step of its returned parameters, and its
    held-out log-loss at every evaluation (steps eval_steps[:len(curve)], 0 first) until it
    stopped."""

    held_out_accuracy: float
    held_out_log_loss: float
    train_log_loss: float
    steps: int  # Adam steps run (an ensemble: its longest-running member)
    best_step: int  # step of the returned parameters (an ensemble: its latest member's)
    train_pairs: int
    held_out_pairs: int
    eval_steps: tuple[int, ...]
    member_steps: tuple[int, ...]
    member_best_steps: tuple[int, ...]
    curves: tuple[tuple[float, ...], ...]

    def to_data(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_data(cls, data: dict) -> FitRecord:
        # JSON writes a non-finite float as null (zopg.store): read it back as NaN.
        number = lambda x: math.nan if x is None else float(x)  # noqa: E731
        return cls(
            held_out_accuracy=number(data["held_out_accuracy"]),
            held_out_log_loss=number(data["held_out_log_loss"]),
            train_log_loss=number(data["train_log_loss"]),
            steps=int(data["steps"]),
            best_step=int(data["best_step"]),
            train_pairs=int(data["train_pairs"]),
            held_out_pairs=int(data["held_out_pairs"]),
            eval_steps=tuple(int(s) for s in data["eval_steps"]),
            member_steps=tuple(int(s) for s in data["member_steps"]),
            member_best_steps=tuple(int(s) for s in data["member_best_steps"]),
            curves=tuple(tuple(number(x) for x in c) for c in data["curves"]),
        )


@dataclasses.dataclass(frozen=True, eq=False)
class FittedProxy:
    """A fitted proxy: its spec, parameters and fit record (compared by identity: arrays)."""

    spec: ProxySpec
    params: object
    record: FitRecord

    def score(self, tokens) -> jax.Array:
        return self.spec.score(self.params, tokens)

    def member_scores(self, tokens) -> jax.Array:
        return self.spec.member_scores(self.params, tokens)


def split_pairs(key, num_pairs: int, holdout: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) pair indices, exactly as fit_proxy(spec, key, ...) splits: the
    held-out set is floor(holdout · num_pairs) pairs drawn without replacement from the key."""
    num_pairs = checked_int("num_pairs", num_pairs, 1)
    holdout = checked_float("holdout", holdout, 0.0, 1.0, low_open=True, high_open=True)
    held = math.floor(holdout * num_pairs)
    if held < 1:
        raise bad_value(
            "num_pairs",
            num_pairs,
            f"too few pairs to hold out {holdout:g} of them (at least {math.ceil(1 / holdout)})",
        )
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), num_pairs))
    return np.sort(order[held:]), np.sort(order[:held])


def _pair_losses(gap, votes):
    """Per pair: the BT cross-entropy of the votes, and whether the gap ranks them right."""
    nll = -(votes * jax.nn.log_sigmoid(gap) + (1.0 - votes) * jax.nn.log_sigmoid(-gap))
    right = jnp.where(gap == 0, 0.5, ((gap > 0) == (votes > 0.5)).astype(jnp.float32))
    return nll, right


@jax.jit
def _metrics(gap, votes):
    """(log-loss, accuracy) of score gaps r(a) − r(b) against the votes; ties (0.5) count in
    the log-loss but not in the accuracy."""
    nll, right = _pair_losses(gap, votes)
    decided = votes != 0.5
    accuracy = jnp.sum(jnp.where(decided, right, 0.0)) / jnp.maximum(jnp.sum(decided), 1)
    return jnp.mean(nll), accuracy


@partial(jax.jit, static_argnums=0)
def _gaps(spec, params, tokens_a, tokens_b):
    return spec.score(params, tokens_a) - spec.score(params, tokens_b)


@partial(jax.jit, static_argnums=(0, 1))
def _start(spec, learning_rate, keys):
    """Every member's initial parameters and Adam state, stacked (jitted: flax's init op by op
    compiles dozens of small programs)."""
    params = jax.vmap(spec._member_init)(keys)
    return params, jax.vmap(optax.adam(learning_rate).init)(params)


def _where_member(mask, new, old):
    """new where mask (one flag per member, the leading axis of every leaf), else old."""
    pick = lambda n, o: jnp.where(mask.reshape(-1, *(1,) * (n.ndim - 1)), n, o)  # noqa: E731
    return jax.tree_util.tree_map(pick, new, old)


@partial(jax.jit, static_argnames=("spec", "batch", "learning_rate", "eval_every"))
def _round(
    state, keys, rows, train, held, patience, steps, *, spec, batch, learning_rate, eval_every
):
    """eval_every Adam steps for every still-active member (none when `steps` is False: the
    evaluation of the initial parameters, without a second compiled program), then one
    held-out evaluation that updates each member's best parameters and patience counter."""
    params, opt_state, best, best_loss, since, active = state
    tx = optax.adam(learning_rate)

    def loss(p, a, b, v):
        gap = spec._member_score(p, a) - spec._member_score(p, b)
        return jnp.mean(_pair_losses(gap, v)[0])

    def member_steps(p, opt, member_rows, key):
        def step(carry, k):
            p, opt = carry
            # Minibatches with replacement from this member's rows (its bootstrap resample).
            idx = member_rows[jax.random.randint(k, (batch,), 0, member_rows.shape[0])]
            grads = jax.grad(loss)(p, train[0][idx], train[1][idx], train[2][idx])
            updates, opt = tx.update(grads, opt, p)
            return (optax.apply_updates(p, updates), opt), None

        (p, opt), _ = jax.lax.scan(step, (p, opt), jax.random.split(key, eval_every))
        return p, opt

    # Members in turn (lax.map), not vmapped: see ProxySpec.member_scores.
    moved, moved_opt = jax.lax.cond(
        steps,
        lambda: jax.lax.map(lambda m: member_steps(*m), (params, opt_state, rows, keys)),
        lambda: (params, opt_state),
    )
    # A member out of patience has stopped: it keeps its parameters while the others train on.
    params = _where_member(active, moved, params)
    opt_state = _where_member(active, moved_opt, opt_state)

    def held_loss_of(p):
        gap = spec._member_score(p, held[0]) - spec._member_score(p, held[1])
        return _metrics(gap, held[2])[0]

    held_loss = jax.lax.map(held_loss_of, params)
    improved = active & (held_loss < best_loss)
    best = _where_member(improved, params, best)
    best_loss = jnp.where(improved, held_loss, best_loss)
    since = jnp.where(improved, 0, since + active.astype(jnp.int32))
    return (params, opt_state, best, best_loss, since, active & (since < patience)), held_loss


def _pairs(spec: ProxySpec, tokens_a, tokens_b, votes):
    """The pairs as NumPy arrays, or a ConfigError naming what is wrong with them."""
    arrays = {}
    for name, tokens in (("tokens_a", tokens_a), ("tokens_b", tokens_b)):
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[1] != spec.seq_len:
            raise bad_value(
                f"{name}.shape", tokens.shape, f"must be [pairs, seq_len = {spec.seq_len}]"
            )
        if not np.issubdtype(tokens.dtype, np.integer):
            raise bad_value(f"{name}.dtype", str(tokens.dtype), "must be an integer type")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= spec.vocab):
            bad = tokens.min() if tokens.min() < 0 else tokens.max()
            raise bad_value(f"{name} token", int(bad), f"must be in [0, vocab = {spec.vocab})")
        arrays[name] = tokens.astype(np.int32)
    if arrays["tokens_a"].shape != arrays["tokens_b"].shape:
        raise bad_value(
            "tokens_b.shape",
            arrays["tokens_b"].shape,
            f"must equal tokens_a.shape = {arrays['tokens_a'].shape}",
        )
    votes = np.asarray(votes)
    pairs = arrays["tokens_a"].shape[:1]
    if votes.shape != pairs:
        raise bad_value("votes.shape", votes.shape, f"must be [pairs] = {pairs}")
    if not (votes.dtype == bool or np.issubdtype(votes.dtype, np.number)) or np.iscomplexobj(votes):
        raise bad_value("votes.dtype", str(votes.dtype), "must be a real or bool type")
    outside = ~((votes >= 0) & (votes <= 1))  # NaN is outside too
    if np.any(outside):
        raise bad_value("votes", float(votes[outside][0]), "must be in [0, 1]")
    return arrays["tokens_a"], arrays["tokens_b"], votes.astype(np.float32)


def _checked_spec(spec) -> ProxySpec:
    if not isinstance(spec, ProxySpec):
        raise bad_value("spec", spec, "must be a ProxySpec from make_proxy")
    return spec


def fit_proxy(
    spec: ProxySpec,
    key,
    tokens_a,
    tokens_b,
    votes,
    *,
    holdout: float = 0.2,
    batch: int = 256,
    learning_rate: float = 3e-3,
    max_steps: int = 4000,
    eval_every: int | None = None,
    patience: int = 5,
) -> FittedProxy:
    """Fit r_φ by Bradley–Terry maximum likelihood on pairs (tokens_a[i], tokens_b[i]) with
    votes[i] = P(a preferred) in [0, 1] (0/1 draws, 0.5 for a tie).

    A held-out fraction of the pairs (split_pairs) is set aside; Adam runs on minibatches of the
    rest, and every eval_every steps (and before the first) the held-out log-loss is measured.
    eval_every defaults to one epoch of the training pairs (at least one step): a fixed count
    would be dozens of epochs on a few hundred pairs, over-fitted before the first look.
    The parameters of the best evaluation are returned; training stops after `patience`
    evaluations without a strict improvement, or at max_steps (rounded down to whole
    evaluations). An ensemble's members train side by side, each on its own bootstrap resample
    of the training pairs from its own init, with its own early stopping. Deterministic given
    the key.
    """
    spec = _checked_spec(spec)
    tokens_a, tokens_b, votes = _pairs(spec, tokens_a, tokens_b, votes)
    batch = checked_int("batch", batch, 1, 2**20)
    learning_rate = checked_float("learning_rate", learning_rate, 0.0, low_open=True)
    max_steps = checked_int("max_steps", max_steps, 1, 2**31 - 1)
    patience = checked_int("patience", patience, 1)
    train_idx, held_idx = split_pairs(key, votes.shape[0], holdout)
    if eval_every is None:
        eval_every = min(max(1, -(-train_idx.size // batch)), max_steps)
    eval_every = checked_int("eval_every", eval_every, 1, max_steps)

    members = spec.num_members
    init_key, boot_key, train_key = (jax.random.fold_in(key, i) for i in (1, 2, 3))
    params, opt_state = _start(spec, learning_rate, jax.random.split(init_key, members))
    if spec.kind == "ensemble":
        rows = jax.random.randint(boot_key, (members, train_idx.size), 0, train_idx.size)
    else:
        rows = jnp.arange(train_idx.size)[None]
    train = tuple(jnp.asarray(x[train_idx]) for x in (tokens_a, tokens_b, votes))
    held = tuple(jnp.asarray(x[held_idx]) for x in (tokens_a, tokens_b, votes))
    inf = jnp.full(members, jnp.inf, jnp.float32)  # not weakly typed: one compiled _round
    state = (params, opt_state, params, inf, jnp.zeros(members, jnp.int32), jnp.ones(members, bool))
    curves = [[] for _ in range(members)]
    member_steps, member_best = [0] * members, [0] * members
    for r in range(max_steps // eval_every + 1):
        keys = jax.random.split(jax.random.fold_in(train_key, r), members)
        active = np.asarray(state[5])
        state, held_loss = _round(
            state,
            keys,
            rows,
            train,
            held,
            patience,
            r > 0,  # round 0 evaluates the initial parameters only
            spec=spec,
            batch=batch,
            learning_rate=learning_rate,
            eval_every=eval_every,
        )
        held_loss = np.asarray(held_loss)
        for m in np.flatnonzero(active):
            loss = float(held_loss[m])
            if not curves[m] or loss < min(curves[m]):
                member_best[m] = r * eval_every
            curves[m].append(loss)
            member_steps[m] = r * eval_every
        if not np.any(np.asarray(state[5])):
            break

    best = state[2]
    if spec.kind != "ensemble":
        best = jax.tree_util.tree_map(lambda x: x[0], best)
    gaps = np.asarray(_gaps(spec, best, tokens_a, tokens_b))
    held_log_loss, held_accuracy = _metrics(gaps[held_idx], votes[held_idx])
    train_log_loss, _ = _metrics(gaps[train_idx], votes[train_idx])
    record = FitRecord(
        held_out_accuracy=float(held_accuracy),
        held_out_log_loss=float(held_log_loss),
        train_log_loss=float(train_log_loss),
        steps=max(member_steps),
        best_step=max(member_best),
        train_pairs=int(train_idx.size),
        held_out_pairs=int(held_idx.size),
        eval_steps=tuple(range(0, max(member_steps) + 1, eval_every)),
        member_steps=tuple(member_steps),
        member_best_steps=tuple(member_best),
        curves=tuple(tuple(c) for c in curves),
    )
    return FittedProxy(spec=spec, params=best, record=record)


def evaluate_pairs(spec: ProxySpec, params, tokens_a, tokens_b, votes) -> dict:
    """{"accuracy", "log_loss", "pairs"} of spec.score on labelled pairs (see FitRecord)."""
    spec = _checked_spec(spec)
    tokens_a, tokens_b, votes = _pairs(spec, tokens_a, tokens_b, votes)
    log_loss, accuracy = _metrics(_gaps(spec, params, tokens_a, tokens_b), votes)
    return {"accuracy": float(accuracy), "log_loss": float(log_loss), "pairs": int(votes.size)}


def held_out_accuracy(fitted: FittedProxy) -> float:
    """The share of the fit's non-tied held-out pairs the proxy ranks the votes' way."""
    return fitted.record.held_out_accuracy


def proxy_report(fitted: FittedProxy) -> dict:
    """A flat, JSON-ready summary of a fitted proxy for an experiment's records."""
    spec, record = fitted.spec, fitted.record
    return {
        "kind": spec.kind,
        "base": spec.base_kind,
        "members": spec.num_members,
        "objective": spec.objective if spec.kind == "ensemble" else None,
        "lam": spec.lam if spec.kind == "ensemble" else None,
        "train_pairs": record.train_pairs,
        "held_out_pairs": record.held_out_pairs,
        "held_out_accuracy": record.held_out_accuracy,
        "held_out_log_loss": record.held_out_log_loss,
        "train_log_loss": record.train_log_loss,
        "steps": record.steps,
        "best_step": record.best_step,
    }


# -- saving --------------------------------------------------------------------------------------


def _leaf_paths(params) -> list[str]:
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def save_proxy(path, fitted: FittedProxy) -> Path:
    """One .npz, written atomically: the parameter leaves as plain arrays and, as a JSON string,
    the spec, the fit record and the leaves' tree paths. No pickles."""
    leaves = jax.tree_util.tree_leaves(fitted.params)
    meta = {
        "format": FORMAT,
        "spec": fitted.spec.to_data(),
        "record": fitted.record.to_data(),
        "leaves": _leaf_paths(fitted.params),
    }
    arrays = {"__proxy__": np.array(json_text(meta))}
    arrays.update({f"leaf{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_bytes_atomic(path, buffer.getvalue())


def load_proxy(path) -> FittedProxy:
    """A proxy saved by save_proxy, bit-identical; anything else (a damaged or foreign file, an
    object array, parameters that do not fit the spec) is one ConfigError naming the file."""
    path = Path(path)

    def damaged(reason: str) -> ConfigError:
        return ConfigError(f"{path}: not a saved proxy ({reason})")

    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["__proxy__"]))
            arrays = {k: data[k] for k in data.files if k != "__proxy__"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        # ValueError covers an object array, which np.load refuses without pickles.
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise damaged(reason) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise damaged(f"format is not {FORMAT!r}")
    try:
        spec = ProxySpec(**meta["spec"])
        record = FitRecord.from_data(meta["record"])
    except ConfigError as err:
        raise damaged(f"its spec: {err}") from None
    except (KeyError, TypeError, ValueError) as err:
        raise damaged(f"its spec or record: {type(err).__name__} {err}") from None
    like = jax.eval_shape(spec.init, jax.random.PRNGKey(0))
    template, treedef = jax.tree_util.tree_flatten(like)
    names = [f"leaf{i:05d}" for i in range(len(template))]
    if sorted(arrays) != names or meta.get("leaves") != _leaf_paths(like):
        raise damaged(f"its arrays are not the parameters of a {spec.kind} proxy")
    leaves = []
    for name, ref in zip(names, template, strict=True):
        value = arrays[name]
        if value.shape != ref.shape or value.dtype != ref.dtype:
            raise damaged(
                f"{name} is {value.dtype}{list(value.shape)}, the spec needs "
                f"{ref.dtype}{list(ref.shape)}"
            )
        leaves.append(jnp.asarray(value))
    return FittedProxy(
        spec=spec, params=jax.tree_util.tree_unflatten(treedef, leaves), record=record
    )
