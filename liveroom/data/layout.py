"""The one place that decides column names and the feature layout.

Input x of the sales model: the 8 tabular columns, then the LLM features
``entry``, ``action``, ``read``, ``state`` (8 personas each) = 40 floats.
Targets y: 4 log counts, 8 watch shares, 8 pay shares = 20 floats.
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


def llm_feature_names(personas: tuple[str, ...] = PERSONA_KEYS) -> list[str]:
    """Names of the 32 LLM input columns, e.g. ``entry_Z``, in x order."""
    return [f"{f}_{k}" for f in LLM_FEATURES for k in personas]


def input_names(with_llm: bool = True) -> list[str]:
    """Names of the model's input columns in x order."""
    return [*TABULAR_COLUMNS, *(llm_feature_names() if with_llm else [])]
