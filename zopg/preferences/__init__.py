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
    WithMistakes,
    link_names,
    make_link,
    register_link,
    trim_probability,
    value_difference,
)
from zopg.preferences.oracle import Feedback, Oracle, preference_rate
from zopg.preferences.teacher import Teacher
from zopg.preferences.utilities import (
    UTILITIES,
    Automaton,
    Utility,
    make_utility,
    myopic_return,
    register_utility,
    utility_names,
)

__all__ = [
    "LINKS",
    "UTILITIES",
    "Automaton",
    "BradleyTerry",
    "Feedback",
    "Hard",
    "Linear",
    "Link",
    "Oracle",
    "Teacher",
    "Thurstone",
    "Utility",
    "WeibullSymmetric",
    "WeibullUtility",
    "WithMistakes",
    "link_names",
    "make_link",
    "make_utility",
    "myopic_return",
    "preference_rate",
    "register_link",
    "register_utility",
    "trim_probability",
    "utility_names",
    "value_difference",
]
