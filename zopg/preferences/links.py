"""Links σ(x) = P(first trajectory preferred | utility difference x), inverses and trimming."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar, Protocol

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np

from zopg.errors import bad_value, checked_float, unknown_name
from zopg.plugins import import_object, is_import_path


class Link(Protocol):
    """What every link offers; links are frozen and hash by value, so jit takes them as static."""

    name: ClassVar[str]
    invertible: ClassVar[bool]
    # |x| beyond which σ is constant in exact arithmetic (inf for strictly increasing links).
    saturation: float

    def prob(self, x: jax.typing.ArrayLike) -> jax.Array: ...

    def inverse(self, p: jax.typing.ArrayLike) -> jax.Array: ...


def _as_float_array(x: jax.typing.ArrayLike) -> jax.Array:
    # dtype=float means JAX's default float (float32 unless x64 is on), so integer inputs work too.
    return jnp.asarray(x, dtype=float)


def _positive(link_name: str, field: str, value: object) -> float:
    return checked_float(
        f"{link_name}.{field}", value, 0.0, math.inf, low_open=True, high_open=True
    )


@dataclasses.dataclass(frozen=True)
class BradleyTerry:
    """Logistic link σ(x) = 1 / (1 + exp(−x / scale)), the papers' default."""

    scale: float = 1.0
    name: ClassVar[str] = "bradley-terry"
    invertible: ClassVar[bool] = True
    saturation: ClassVar[float] = math.inf

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _positive(self.name, "scale", self.scale))

    def prob(self, x: jax.typing.ArrayLike) -> jax.Array:
        return jax.nn.sigmoid(_as_float_array(x) / self.scale)

    def inverse(self, p: jax.typing.ArrayLike) -> jax.Array:
        return self.scale * jsp.logit(_as_float_array(p))


@dataclasses.dataclass(frozen=True)
class Thurstone:
    """Probit link σ(x) = Φ(x / (√2·scale)): difference of two Gaussian utilities of std `scale`."""

    scale: float = 1.0
    name: ClassVar[str] = "thurstone"
    invertible: ClassVar[bool] = True
    saturation: ClassVar[float] = math.inf

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _positive(self.name, "scale", self.scale))

    def prob(self, x: jax.typing.ArrayLike) -> jax.Array:
        return jsp.ndtr(_as_float_array(x) / (math.sqrt(2.0) * self.scale))

    def inverse(self, p: jax.typing.ArrayLike) -> jax.Array:
        return math.sqrt(2.0) * self.scale * jsp.ndtri(_as_float_array(p))


# The Weibull random-utility link has no closed form, so it is tabulated once per (shape, scale).
# The table holds only x >= 0 and stores the upper tail P(D > x) rather than σ(x): by symmetry
# that is all we need, and tail values down to 1e-7 stay distinct in float32 where 1 − 1e-7 would
# round to 1 and break the strict monotonicity that the inverse's interpolation relies on.
_WEIBULL_TABLE_SIZE = 8193
_WEIBULL_SMALLEST_TAIL = 1e-7
_WEIBULL_SHAPE_RANGE = (0.1, 100.0)


def _weibull_difference_tail_unit(y: np.ndarray, shape: float) -> np.ndarray:
    """P(ε_0 − ε_1 > y) for i.i.d. Weibull(shape, 1) noise and y >= 0, by tanh-sinh quadrature.

    P(ε_0 > y + ε_1) = ∫_0^1 S(y + F⁻¹(u)) du with S the survival function and F⁻¹ the quantile
    function. Tanh-sinh handles the algebraic singularity of F⁻¹ at u = 0 (shape > 1) and its
    logarithmic growth at u = 1; against scipy.integrate.quad it agrees to about 1e-9 or better.
    """
    step, half_width = 1.0 / 32.0, 3.3
    t = np.arange(-half_width, half_width + step / 2, step)
    s = 0.5 * np.pi * np.sinh(t)
    # u = expit(2s) and 1 − u = expit(−2s), so −log(1 − u) = softplus(2s) without cancellation.
    u, one_minus_u = 1.0 / (1.0 + np.exp(-2.0 * s)), 1.0 / (1.0 + np.exp(2.0 * s))
    weights = step * np.pi * np.cosh(t) * u * one_minus_u
    quantiles = np.logaddexp(0.0, 2.0 * s) ** (1.0 / shape)
    survival = np.exp(-((y[:, None] + quantiles[None, :]) ** shape))
    return survival @ weights


@functools.lru_cache(maxsize=64)
def _weibull_table(shape: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(x, tail): x >= 0 increasing and tail = P(D > x) strictly decreasing, both float32."""
    # Grid uniform in w = y**min(shape, 1): for shape < 1 that straightens both the steep start
    # and the stretched exponential tail; for shape >= 1 it is uniform in y.
    power = 1.0 / min(shape, 1.0)
    # P(D > y) <= P(ε_0 > y) = exp(−y**shape) bounds the range; a coarse pass then finds where
    # the tail actually reaches 1e-7 (much earlier for large shapes).
    bound = (-math.log(_WEIBULL_SMALLEST_TAIL)) ** (1.0 / shape)
    coarse = bound * np.linspace(0.0, 1.0, 513) ** power
    coarse_tail = _weibull_difference_tail_unit(coarse, shape)
    y_max = coarse[np.argmax(coarse_tail <= _WEIBULL_SMALLEST_TAIL)]
    y = y_max * np.linspace(0.0, 1.0, _WEIBULL_TABLE_SIZE) ** power
    tail = _weibull_difference_tail_unit(y, shape)
    tail[0] = 0.5  # exact by symmetry
    x32, tail32 = (scale * y).astype(np.float32), tail.astype(np.float32)
    # Keep only points that stay strictly monotone after rounding to float32.
    keep = np.ones(x32.shape, dtype=bool)
    last = 0
    for i in range(1, len(x32)):
        if x32[i] > x32[last] and tail32[i] < tail32[last]:
            last = i
        else:
            keep[i] = False
    x32, tail32 = x32[keep], tail32[keep]
    x32.setflags(write=False)
    tail32.setflags(write=False)
    return x32, tail32


@dataclasses.dataclass(frozen=True)
class WeibullUtility:
    """Random-utility link σ(x) = P(ε_0 − ε_1 < x), ε i.i.d. Weibull(shape, scale); tabulated.

    Our reconstruction of the papers' Weibull model (their exact form is unknown). σ is
    interpolated from a table accurate to about 1e-5 that ends where 1 − σ reaches 1e-7; beyond
    it σ is exactly 1 (or 0), a step float32 barely resolves, so that, as for the closed-form
    links, inverse(1) = inf and trimming with a large r_max behaves the same way.
    """

    shape: float = 2.0
    scale: float = 1.0
    name: ClassVar[str] = "weibull"
    invertible: ClassVar[bool] = True
    # The table's end is a numerical cut-off, not a property of the model.
    saturation: ClassVar[float] = math.inf

    def __post_init__(self) -> None:
        low, high = _WEIBULL_SHAPE_RANGE
        # Outside this range the table's x span over- or underflows float32 resolution.
        shape = checked_float(f"{self.name}.shape", self.shape, low, high)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "scale", _positive(self.name, "scale", self.scale))
        _weibull_table(self.shape, self.scale)  # build now, so a trace never pays for it

    def prob(self, x: jax.typing.ArrayLike) -> jax.Array:
        x_grid, tail = _weibull_table(self.shape, self.scale)
        x = _as_float_array(x)
        upper_tail = jnp.interp(jnp.abs(x), x_grid, tail)
        upper_tail = jnp.where(jnp.abs(x) > x_grid[-1], 0.0, upper_tail)
        return jnp.where(x >= 0, 1.0 - upper_tail, upper_tail)

    def inverse(self, p: jax.typing.ArrayLike) -> jax.Array:
        x_grid, tail = _weibull_table(self.shape, self.scale)
        p = _as_float_array(p)
        # Work with the smaller tail probability; it is exactly what the table resolves.
        smaller_tail = jnp.minimum(p, 1.0 - p)
        magnitude = jnp.interp(smaller_tail, tail[::-1], x_grid[::-1])
        magnitude = jnp.where(smaller_tail > 0.0, magnitude, jnp.inf)
        return jnp.where(p >= 0.5, magnitude, -magnitude)


@dataclasses.dataclass(frozen=True)
class WeibullSymmetric:
    """Closed-form symmetric Weibull link σ(x) = ½ + ½·sign(x)·(1 − exp(−(|x|/scale)^shape))."""

    shape: float = 2.0
    scale: float = 1.0
    name: ClassVar[str] = "weibull-symmetric"
    invertible: ClassVar[bool] = True
    saturation: ClassVar[float] = math.inf

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _positive(self.name, "shape", self.shape))
        object.__setattr__(self, "scale", _positive(self.name, "scale", self.scale))

    def prob(self, x: jax.typing.ArrayLike) -> jax.Array:
        x = _as_float_array(x)
        mass = -jnp.expm1(-((jnp.abs(x) / self.scale) ** self.shape))
        return 0.5 + 0.5 * jnp.sign(x) * mass

    def inverse(self, p: jax.typing.ArrayLike) -> jax.Array:
        p = _as_float_array(p)
        mass = jnp.abs(2.0 * p - 1.0)
        magnitude = self.scale * (-jnp.log1p(-mass)) ** (1.0 / self.shape)
        return jnp.sign(p - 0.5) * magnitude


@dataclasses.dataclass(frozen=True)
class Linear:
    """Clipped linear link σ(x) = clip(½ + x/(2c), 0, 1); the inverse is exact only for |x| <= c."""

    c: float = 1.0
    name: ClassVar[str] = "linear"
    invertible: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "c", _positive(self.name, "c", self.c))

    @property
    def saturation(self) -> float:
        return self.c

    def prob(self, x: jax.typing.ArrayLike) -> jax.Array:
        return jnp.clip(0.5 + _as_float_array(x) / (2.0 * self.c), 0.0, 1.0)

    def inverse(self, p: jax.typing.ArrayLike) -> jax.Array:
        return (_as_float_array(p) - 0.5) * 2.0 * self.c


@dataclasses.dataclass(frozen=True)
class Hard:
    """Perfectly rational link σ(x) = 1[x > 0], ½ at ties; Bradley–Terry's limit as scale → 0."""

    name: ClassVar[str] = "hard"
    invertible: ClassVar[bool] = False
    saturation: ClassVar[float] = 0.0

    def prob(self, x: jax.typing.ArrayLike) -> jax.Array:
        return 0.5 + 0.5 * jnp.sign(_as_float_array(x))

    def inverse(self, p: jax.typing.ArrayLike) -> jax.Array:
        raise bad_value(
            "link",
            self.name,
            "the hard link is not invertible; use a sign-based method (e.g. zspo) or an "
            "invertible link",
        )


@dataclasses.dataclass(frozen=True)
class WithMistakes:
    """The effective link (1 − 2ε)·σ(x) + ε of a teacher who flips each vote of `base` with
    probability ε (science.md §2); its inverse removes the flips before inverting σ."""

    base: Link
    mistake: float = 0.1
    name: ClassVar[str] = "with-mistakes"
    invertible: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not (callable(getattr(self.base, "prob", None)) and hasattr(self.base, "inverse")):
            raise bad_value("with-mistakes.base", self.base, "must be a link (see make_link)")
        value = checked_float(f"{self.name}.mistake", self.mistake, 0.0, 0.5, high_open=True)
        object.__setattr__(self, "mistake", value)

    @property
    def saturation(self) -> float:
        return self.base.saturation

    def prob(self, x: jax.typing.ArrayLike) -> jax.Array:
        return (1.0 - 2.0 * self.mistake) * self.base.prob(x) + self.mistake

    def inverse(self, p: jax.typing.ArrayLike) -> jax.Array:
        clean = (_as_float_array(p) - self.mistake) / (1.0 - 2.0 * self.mistake)
        return self.base.inverse(clean)


_LINK_CLASSES: dict[str, type] = {
    "bradley-terry": BradleyTerry,
    "thurstone": Thurstone,
    "weibull": WeibullUtility,
    "weibull-symmetric": WeibullSymmetric,
    "linear": Linear,
    "hard": Hard,
}
_LINK_ALIASES = {"bt": "bradley-terry"}
# The built-in links (registered ones are added to _LINK_CLASSES; see link_names).
LINKS: tuple[str, ...] = tuple(_LINK_CLASSES)


# What a link class needs, whoever wrote it (frozen, so that it hashes by value and jit can take
# it as static).
LINK_MEMBERS = ("name", "invertible", "saturation", "prob", "inverse")
_LINK_WANTED = f"a frozen dataclass with {', '.join(LINK_MEMBERS)} (see zopg.preferences.Link)"


def _is_link_class(found) -> bool:
    return (
        isinstance(found, type)
        and dataclasses.is_dataclass(found)
        and found.__dataclass_params__.frozen
        and all(hasattr(found, m) for m in LINK_MEMBERS)
    )


def _imported_link(path: str) -> type:
    """A link class named by import path."""
    return import_object("link", path, _is_link_class, _LINK_WANTED)


def register_link(link_class: type, *, replace: bool = False) -> type:
    """Make a link class known by its `name` to make_link and experiment files."""
    if not _is_link_class(link_class):
        raise bad_value("link class", link_class, f"must be {_LINK_WANTED}")
    name = link_class.name
    if not isinstance(name, str) or not name or is_import_path(name):
        raise bad_value("link class name", name, "must be a non-empty string without ':'")
    if (name in _LINK_CLASSES or name in _LINK_ALIASES) and not replace:
        raise bad_value("link class name", name, "is taken; pass replace=True")
    _LINK_CLASSES[name] = link_class
    return link_class


def link_names() -> tuple[str, ...]:
    """The built-in links, then the registered ones."""
    return tuple(_LINK_CLASSES)


def make_link(name: str, **params: object) -> Link:
    """The link registered as `name` (see link_names; "bt" is an alias), or the link class named by
    import path ("package.module:NAME"), built with `params`."""
    if is_import_path(name):
        canonical, link_class = name, _imported_link(name)
    else:
        # A name that is not a string (a list from a TOML file, say) is unknown, not a TypeError.
        canonical = _LINK_ALIASES.get(name, name) if isinstance(name, str) else None
        if canonical not in _LINK_CLASSES:
            known = [*link_names(), *_LINK_ALIASES, "'package.module:NAME'"]
            raise unknown_name("link", name, known)
        link_class = _LINK_CLASSES[canonical]
    known = [field.name for field in dataclasses.fields(link_class)]
    for param in params:
        if param not in known:
            raise bad_value(
                f"{canonical} link parameter",
                param,
                f"known parameters: {', '.join(known) or 'none'}",
            )
    return link_class(**params)


def _check_r_max(r_max: jax.typing.ArrayLike) -> None:
    try:
        values = np.asarray(r_max, dtype=float)
    except TypeError:
        return  # a traced value; only concrete ones can be checked
    if not np.all((values > 0) & np.isfinite(values)):
        raise bad_value("r_max", r_max, "must be positive and finite")


def trim_probability(p: jax.typing.ArrayLike, link: Link, r_max: jax.typing.ArrayLike) -> jax.Array:
    """Clip p to [σ(−r_max), σ(r_max)], the probabilities of utility differences |x| <= r_max."""
    _check_r_max(r_max)
    r_max = _as_float_array(r_max)
    return jnp.clip(_as_float_array(p), link.prob(-r_max), link.prob(r_max))


def value_difference(
    p_hat: jax.typing.ArrayLike, link: Link, r_max: jax.typing.ArrayLike
) -> jax.Array:
    """Δ̂ = σ⁻¹(trim(p̂)), the utility difference a preference rate implies (science.md §3).

    Rates at or beyond the trimming bounds give exactly ±r_max. A link that saturates (Linear(c)
    is flat beyond ±c) cannot tell differences beyond that apart, so it is trimmed at
    min(r_max, c) instead: Δ̂ recovers the true difference only when r_max <= c.
    """
    _check_r_max(r_max)
    r_max = jnp.minimum(_as_float_array(r_max), link.saturation)
    low, high = link.prob(-r_max), link.prob(r_max)
    p_hat = _as_float_array(p_hat)
    inner = link.inverse(jnp.clip(p_hat, low, high))
    # σ⁻¹(σ(±r)) = ±r exactly, so the bounds are answered directly: in float32, σ(r) rounds
    # (for Bradley–Terry, to 1 − 6e-8 or to 1 beyond r ≈ 17), and σ⁻¹ of the rounded value is off
    # by up to the whole gap, or infinite.
    delta = jnp.where(p_hat >= high, r_max, jnp.where(p_hat <= low, -r_max, inner))
    return jnp.clip(delta, -r_max, r_max)
