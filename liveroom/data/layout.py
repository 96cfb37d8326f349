"""The one place that decides column names, counts, slices and the feature layout.

Input x of the sales model: the 8 tabular columns, then the LLM features
``entry``, ``action``, ``read``, ``state`` (8 personas each) = 40 floats.
Targets y: 4 log counts (``REG``), 8 watch shares (``WATCH``), 8 pay shares
(``PAY``) = 20 floats.

The sales model is built for the default persona set: its share targets are
the ``prop_<persona>_*`` columns of those personas, so every count here
follows :data:`~liveroom.data.personas.PERSONA_KEYS`. A custom persona set
changes what is scored; the trainer refuses feature matrices of another width.
"""

from __future__ import annotations

from .personas import PERSONA_KEYS

TIME_COLUMNS: tuple[str, ...] = ("dow_cos", "dow_sin", "hour_cos", "hour_sin", "is_workday", "is_holiday")
TABULAR_COLUMNS: tuple[str, ...] = (*TIME_COLUMNS, "duration", "user_cnt")

#: the four LLM feature matrices, in the order they enter x
LLM_FEATURES: tuple[str, ...] = ("entry", "action", "read", "state")

REGRESSION_TARGETS: tuple[str, ...] = (
    "log_gmv", "log_deal_order_cnt", "log_live_deal_user_cnt", "log_watch_user_cnt",
)
WATCH_TARGETS: tuple[str, ...] = tuple(f"prop_{k}_watch" for k in PERSONA_KEYS)
PAY_TARGETS: tuple[str, ...] = tuple(f"prop_{k}_pay" for k in PERSONA_KEYS)
TARGET_COLUMNS: tuple[str, ...] = (*REGRESSION_TARGETS, *WATCH_TARGETS, *PAY_TARGETS)

#: columns every pitches file must have to be scored
TEXT_COLUMNS: tuple[str, ...] = ("index", "start", "title", "prod", "text")

N_PERSONAS = len(PERSONA_KEYS)                  # 8
N_TABULAR = len(TABULAR_COLUMNS)                # 8 inputs without the LLM features (40 with them)
N_REG = len(REGRESSION_TARGETS)                 # 4
N_SHARE = N_PERSONAS                            # 8 shares per head
N_TARGETS = len(TARGET_COLUMNS)                 # 20

#: where each head's targets (and outputs) sit in y
REG = slice(0, N_REG)
WATCH = slice(N_REG, N_REG + N_SHARE)
PAY = slice(N_REG + N_SHARE, N_REG + 2 * N_SHARE)

#: every persona score is in 1..5; anything else (NaN, the reference's 0 = missing) is no score
SCORE_MIN, SCORE_MAX = 1.0, 5.0
SCORE_LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)

#: which value of a score is a feature: the sampled integer (the method) or the expected score
#: sum(k * p(k)) over the digit token's probabilities (``--score-probs``). In a record's ``scores``,
#: beside each feature ``f`` (the integer) stand, when the reply's probabilities were found,
#: ``f_expected`` (float), ``f_probs`` (5 floats, p(1)..p(5), renormalised over the digits) and
#: ``f_mass`` (the share of the token's probability the digits 1..5 held before renormalising);
#: a buy reply adds ``items_expected``, ``items_probs`` and ``items_mass`` (one per item, showcase
#: order), and its ``state_*`` is the items' mean, its ``action_*`` the first item's.
#: ``bin/collect`` writes ``<f>_expected.npy`` and ``<f>_probs.npy`` (pitches x personas x 5) from them.
SCORE_KINDS: tuple[str, ...] = ("sampled", "expected")
EXPECTED, PROBS, MASS = "_expected", "_probs", "_mass"


def llm_feature_names(personas: tuple[str, ...] = PERSONA_KEYS) -> list[str]:
    """Names of the 32 LLM input columns, e.g. ``entry_Z``, in x order."""
    return [f"{f}_{k}" for f in LLM_FEATURES for k in personas]


def input_names(with_llm: bool = True) -> list[str]:
    """Names of the model's input columns in x order."""
    return [*TABULAR_COLUMNS, *(llm_feature_names() if with_llm else [])]
