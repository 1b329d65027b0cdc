"""Preference models: links (σ, σ⁻¹), simulated teachers and oracles that count their queries."""

from zopg.preferences.links import (
    LINKS,
    BradleyTerry,
    Hard,
    Linear,
    Link,
    Thurstone,
    WeibullSymmetric,
    WeibullUtility,
    make_link,
    trim_probability,
    value_difference,
)
from zopg.preferences.oracle import Feedback, Oracle, preference_rate
from zopg.preferences.teacher import Teacher

__all__ = [
    "LINKS",
    "BradleyTerry",
    "Feedback",
    "Hard",
    "Linear",
    "Link",
    "Oracle",
    "Teacher",
    "Thurstone",
    "WeibullSymmetric",
    "WeibullUtility",
    "make_link",
    "preference_rate",
    "trim_probability",
    "value_difference",
]
