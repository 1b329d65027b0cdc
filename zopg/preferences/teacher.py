"""Simulated-teacher imperfections from B-Pref (rationality, myopia, mistakes, skips, ties)."""

from __future__ import annotations

import dataclasses
import math

from zopg.errors import checked_float


@dataclasses.dataclass(frozen=True)
class Teacher:
    """How a simulated human departs from the link; the defaults give a perfect teacher.

    rationality     β > 0: the link sees β·Δ (large β: nearly hard choices, small β: noisy).
    myopia          γ in (0, 1]: step k of H counts γ^(H−k) in the utility; 1 turns it off.
    mistake         ε in [0, ½]: each vote is flipped with probability ε (ties stay ½).
    skip_threshold  abstain when both utilities are below it; the query is still spent.
    equal_threshold report a tie (vote ½) when |Δ| is below it; 0 never does.

    Skip and tie decisions use the same (possibly myopic) utilities as the votes, so a teacher
    judges every part of a query by one notion of utility.
    """

    rationality: float = 1.0
    myopia: float = 1.0
    mistake: float = 0.0
    skip_threshold: float = -math.inf
    equal_threshold: float = 0.0

    def __post_init__(self) -> None:
        checked = {
            "rationality": checked_float(
                "teacher.rationality",
                self.rationality,
                0.0,
                math.inf,
                low_open=True,
                high_open=True,
            ),
            "myopia": checked_float("teacher.myopia", self.myopia, 0.0, 1.0, low_open=True),
            "mistake": checked_float("teacher.mistake", self.mistake, 0.0, 0.5),
            # Any threshold but NaN: ±inf mean "always" or "never".
            "skip_threshold": checked_float("teacher.skip_threshold", self.skip_threshold),
            "equal_threshold": checked_float("teacher.equal_threshold", self.equal_threshold, 0.0),
        }
        # Store plain floats so equal teachers hash equally as static jit arguments.
        for field, value in checked.items():
            object.__setattr__(self, field, value)

    @property
    def is_myopic(self) -> bool:
        return self.myopia < 1.0
