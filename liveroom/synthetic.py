"""Synthetic pitches in the reference format, with a planted signal.

``make_synthetic(n, seed)`` returns a pitches table (every reference column,
rows in time order, ``index`` 0..n-1), a showcase (``start`` -> ``[idx, name,
price]`` items) and the four persona feature matrices (n x 8, persona order of
:data:`liveroom.data.personas.PERSONA_KEYS`) exactly as the simulator
(:mod:`liveroom.sim.heuristic`) answers them:

* ``entry[i, k]  = entry_score(persona k, hour of start, is_workday)``
* ``buy = buy_scores(persona k, prices of the kept items)`` (price > 0, first
  10); ``state = mean(buy)``, ``action = buy[0]`` (the promoted item)
* ``read[i, k]   = read_score(persona k, text)``

Targets are planted from those features, the tabular columns and noise
(``mean_*`` = mean over the 8 personas, ``N(s)`` = normal noise of sd ``s``,
``price0`` = price of the promoted item)::

    log_watch_user_cnt     = log(user_cnt) - 1.2 + 0.35 (mean_entry - 3)
                             + 0.1 log(duration) + N(0.15)
    conv                   = -4.0 + 0.45 (mean_action - 3) + 0.35 (mean_read - 3)
                             + 0.25 (mean_state - 3) + N(0.2)
    log_live_deal_user_cnt = max(log_watch_user_cnt + conv, 0)
    log_deal_order_cnt     = log_live_deal_user_cnt + |N(0.2)|       (orders >= buyers)
    log_gmv                = log_deal_order_cnt + 0.6 log(price0) + 0.3 (mean_read - 3) + N(0.2)
    prop_*_watch           = softmax(0.6 entry + WATCH_PRIOR + N(0.3))
    prop_*_pay             = softmax(0.7 action + 0.4 read + log(prop_*_watch) + N(0.3))

So a model that sees only the tabular columns can learn ``entry`` (a function
of hour and workday) but not the price- and transcript-driven ``action``,
``state`` and ``read`` that move buyers and GMV.

Beside each matrix ``f`` stands ``f_expected``: the expected score
``sum(k p(k))`` with ``p = score_distribution(latent, 1.0)`` around the
simulator's unrounded score (:mod:`liveroom.sim.heuristic`), what a server's
logprobs give (``state_expected`` the items' mean, ``action_expected`` the
first item's). With ``draw_temperature`` T the integer matrices are instead
draws from ``score_distribution(latent, T)`` (T = 0.2: what a model sampling
at the method's temperature answers), from a generator of their own, while
the targets stay planted from the modes above: the pitches, showcases,
targets and expected scores are the same with or without it. That is the
data on which sampled integers and expected scores are compared
(``docs/SCORES.md``): the targets follow the integers a noiseless model
would give, the sampled arm sees them with a sampler's noise, the expected
arm a smooth function of the latent behind them.

Everything is vectorised: the per-(pitch, persona) scores are computed once
per distinct input (hour x workday, price, clipped word counts) and looked up.
"""

from __future__ import annotations

import json
from itertools import repeat
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .cliargs import command_parser, non_negative_float, non_negative_int, positive_int
from .data.layout import EXPECTED, LLM_FEATURES, PAY_TARGETS, SCORE_LEVELS, WATCH_TARGETS
from .data.moment import time_features
from .data.personas import PERSONA_KEYS
from .errors import InputError
from .sim.heuristic import (
    NEGATIVE_WORDS,
    POSITIVE_WORDS,
    SPREAD,
    buy_latents,
    buy_scores,
    entry_latent,
    entry_score,
    read_latent,
    read_score,
)

# --------------------------------------------------------------------------- word lists

TITLE_HEADS = ("新年首播", "周末宠粉", "限量上新", "品牌直供", "换季清仓", "开学季", "年货节", "会员日", "工厂直发", "夜场")
TITLE_TAILS = ("好物推荐", "爆款返场", "新品首发", "直播专场", "源头好货", "一起来逛", "惊喜不断", "宝藏上新")
BRANDS = ("云朵", "山川", "小鹿", "星河", "青禾", "木子", "北岸", "初见", "知夏", "南风")
TAGS = ("年货抢先购", "宠粉专属", "直播间专享", "新品", "99新", "全新未使用")
ADJECTIVES = ("经典款", "升级版", "大容量", "轻薄款", "礼盒装", "限定款", "家庭装", "")
#: category -> (item nouns, typical price in yuan)
CATEGORIES: dict[str, tuple[tuple[str, ...], float]] = {
    "美妆": (("精华液", "面霜", "口红", "粉底液", "防晒霜", "面膜"), 150.0),
    "零食": (("坚果礼盒", "牛肉干", "果干", "饼干", "咖啡豆", "茶叶"), 50.0),
    "服饰": (("羽绒服", "连衣裙", "卫衣", "牛仔裤", "运动鞋", "衬衫"), 300.0),
    "奢品": (("水桶包", "围巾", "石英表", "项链", "钱包", "手提包"), 4000.0),
    "家电": (("空气炸锅", "吸尘器", "电饭煲", "扫地机", "吹风机", "净水器"), 800.0),
    "母婴": (("纸尿裤", "奶粉", "婴儿推车", "儿童水杯", "安抚玩具"), 200.0),
    "日用": (("洗衣液", "抽纸", "牙膏", "收纳盒", "保温杯"), 40.0),
}
FILLER = (
    "家人们晚上好", "来看一下这个细节", "我们家的东西大家放心", "新进来的宝宝点个关注", "这个颜色特别显白",
    "我自己也一直在用", "你看一下这个做工", "上身效果非常好", "拍一号链接", "有问题可以打在公屏上",
    "这个尺码是标准的", "后台再加一点库存", "我们来试一下", "质感真的没话说", "回购率非常高",
    "今天主推的就是这一款", "喜欢的可以先加购物车", "我给大家讲一下成分", "这个容量很实在", "老粉都知道",
    "看一下上手的效果", "主播身高一米七", "大家可以去比一比", "这个是今年的新款", "客服随时在线",
)
SELLING = ("今天优惠力度很大", "全国包邮", "限时秒杀", "正品保证", "买一赠一", "下单就送小样", "真的很划算", "福利价给到大家", "比外面便宜")
WARNING = ("下周就要涨价了", "库存不多快没货了", "这个价位确实有点贵", "售罄就不补了", "定制款不退不换")

#: persona prior of the watch shares (log scale), persona order
WATCH_PRIOR = np.array([0.3, 0.1, 0.2, -0.1, 0.2, -0.3, 0.1, -0.4])
FIRST_DAY, DAYS = np.datetime64("2023-01-01"), 365 * 3  # 2023-01-01 .. 2025-12-31
#: relative frequency of a pitch starting in each hour of the day
HOUR_WEIGHTS = np.array([3, 2, 1, 1, 1, 1, 2, 3, 4, 5, 6, 6, 5, 5, 6, 6, 6, 6, 7, 9, 10, 10, 8, 5], float)


def _word_counts(texts: list[str], words: Sequence[str]) -> np.ndarray:
    """min(3, occurrences of ``words`` in the first 1,024 chars), as the heuristic counts."""
    cut = [t[:1024] for t in texts]
    total = sum(np.fromiter(map(str.count, cut, repeat(w)), np.int64, len(cut)) for w in words)
    return np.minimum(3, total)


def _starts(rng: np.random.Generator, n: int) -> np.ndarray:
    """n distinct start minutes over 2023-2025, sorted (chronological order)."""
    if n > 400_000:
        raise InputError(f"--n {n}: at most 400000 pitches (start minutes must be distinct)")
    picked = np.empty(0, np.int64)
    while picked.size < n:
        m = 2 * (n - picked.size) + 16
        day = rng.integers(0, DAYS, m)
        hour = rng.choice(24, m, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
        picked = np.unique(np.concatenate([picked, day * 1440 + hour * 60 + rng.integers(0, 60, m)]))
    return np.sort(rng.choice(picked, n, replace=False))


LEVELS = np.asarray(SCORE_LEVELS, float)


def score_probs(latent: np.ndarray, temperature: float) -> np.ndarray:
    """:func:`liveroom.sim.heuristic.score_distribution` of every latent score at once: shape + (5,)."""
    latent = np.asarray(latent, float)[..., None]
    if temperature <= 0:
        return (LEVELS == np.clip(np.round(latent), 1, 5)).astype(float)
    logits = -((LEVELS - latent) ** 2) / (2 * SPREAD**2) / temperature
    w = np.exp(logits - logits.max(-1, keepdims=True))
    return w / w.sum(-1, keepdims=True)


def expected_score(latent: np.ndarray) -> np.ndarray:
    """sum(k p(k)) over the raw (T = 1) distribution around each latent score."""
    return score_probs(latent, 1.0) @ LEVELS


def draw_scores(rng: np.random.Generator, latent: np.ndarray, temperature: float) -> np.ndarray:
    """One integer 1..5 per latent score, drawn from its distribution at ``temperature``."""
    cdf = np.cumsum(score_probs(latent, temperature), -1)[..., :-1]
    return 1.0 + (rng.random(np.shape(latent))[..., None] >= cdf).sum(-1)


def make_synthetic(n: int, seed: int = 0, draw_temperature: float | None = None
                   ) -> tuple[pd.DataFrame, dict[str, list], dict[str, np.ndarray]]:
    """(pitches, showcase, features) for ``n`` pitches; see the module docstring. ``features`` holds the
    four integer matrices and their ``*_expected``."""
    if n < 1:
        raise InputError(f"--n {n}: need at least one pitch")
    rng = np.random.default_rng(seed)
    P = len(PERSONA_KEYS)

    # moments
    minutes = _starts(rng, n)
    start = pd.Series(FIRST_DAY.astype("datetime64[m]") + minutes.astype("timedelta64[m]"))
    start_str = start.dt.strftime("%Y-%m-%d %H:%M").to_numpy()
    tf = time_features(start)
    hour = start.dt.hour.to_numpy()
    workday = tf["is_workday"].to_numpy().astype(np.int64)

    # showcase: the promoted item first, 1-12 items, a few with price <= 0 after it
    cats = list(CATEGORIES)
    cat = rng.integers(0, len(cats), n)
    typical = np.array([CATEGORIES[c][1] for c in cats])[cat]
    n_items = rng.integers(1, 13, n)
    offsets = np.concatenate([[0], np.cumsum(n_items)])
    total = int(offsets[-1])
    owner = np.repeat(np.arange(n), n_items)
    raw = typical[owner] * np.exp(rng.normal(0, 0.8, total))
    price = np.maximum(np.round(raw), 1.0) - rng.choice([0.0, 0.1, 1.0], total, p=[0.5, 0.3, 0.2])
    price = np.maximum(price, 0.9)
    first = offsets[:-1]
    not_first = np.ones(total, bool)
    not_first[first] = False
    dropped = not_first & (rng.random(total) < 0.04)
    price[dropped] = rng.choice([0.0, -1.0], int(dropped.sum()))
    pos_in_room = np.arange(total) - offsets[owner]
    positive = price > 0
    rank = np.cumsum(positive) - (np.cumsum(positive) - positive)[first][owner]  # 1-based among positives
    kept = positive & (rank <= 10)

    names_table = np.array([f"【{t}】{b}{a}{noun}" for c in cats for noun in CATEGORIES[c][0]
                            for t in TAGS for b in BRANDS for a in ADJECTIVES])
    per_noun = len(TAGS) * len(BRANDS) * len(ADJECTIVES)
    noun_base = np.cumsum([0, *(len(CATEGORIES[c][0]) for c in cats)])[:-1]
    item_cat = cat[owner]
    n_nouns = np.array([len(CATEGORIES[c][0]) for c in cats])[item_cat]
    noun = noun_base[item_cat] + (rng.random(total) * n_nouns).astype(np.int64)
    names = names_table[noun * per_noun + rng.integers(0, per_noun, total)].tolist()
    items = list(map(list, zip(pos_in_room.tolist(), names, price.tolist())))
    showcase = {s: items[lo:hi] for s, lo, hi in zip(start_str.tolist(), offsets[:-1].tolist(), offsets[1:].tolist())}

    # transcripts: filler phrases with selling / warning phrases at random rates, shuffled
    phrases = np.array([*FILLER, *SELLING, *WARNING], dtype=object)
    counts = np.stack([rng.integers(6, 150, n), rng.poisson(rng.uniform(0, 3.5, n)), rng.poisson(rng.uniform(0, 1.2, n))], 1)
    kind_lo, kind_size = np.array([0, len(FILLER), len(FILLER) + len(SELLING)]), np.array([len(FILLER), len(SELLING), len(WARNING)])
    n_parts = counts.sum(1)
    part_kind = np.repeat(np.tile(np.arange(3), n), counts.ravel())
    part_owner = np.repeat(np.arange(n), n_parts)
    part = kind_lo[part_kind] + (rng.random(part_kind.size) * kind_size[part_kind]).astype(np.int64)
    words = phrases[part[np.argsort(part_owner + rng.random(part.size))]].tolist()
    cuts = np.concatenate([[0], np.cumsum(n_parts)]).tolist()
    texts = ["".join(words[lo:hi]) for lo, hi in zip(cuts[:-1], cuts[1:])]

    # the simulator's scores (and unrounded scores), looked up per distinct input
    entry_table = np.array([[[entry_score(k, h, bool(wd)) for wd in (0, 1)] for h in range(24)] for k in PERSONA_KEYS], float)
    entry_latents = np.array([[[entry_latent(k, h, bool(wd)) for wd in (0, 1)] for h in range(24)] for k in PERSONA_KEYS])
    entry = entry_table[:, hour, workday].T
    entry_lat = entry_latents[:, hour, workday].T
    uniq, inv = np.unique(price[kept], return_inverse=True)
    buy_kept = np.stack([np.asarray(buy_scores(k, uniq.tolist()), float)[inv] for k in PERSONA_KEYS], 1)
    buy_lat = np.stack([np.asarray(buy_latents(k, uniq.tolist()))[inv] for k in PERSONA_KEYS], 1)
    room = owner[kept]
    items_per_room = np.bincount(room, minlength=n)[:, None]
    first_kept = np.concatenate([[True], room[1:] != room[:-1]])

    def state_action(buy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        state = np.zeros((n, P))
        np.add.at(state, room, buy)
        return state / items_per_room, buy[first_kept]

    state, action = state_action(buy_kept)
    pos = _word_counts(texts, POSITIVE_WORDS)
    neg = _word_counts(texts, NEGATIVE_WORDS)
    # read_score sees the text only through the clipped counts, so one text per (pos, neg) stands for all
    read_table = np.array([[[read_score(k, "优惠" * a + "涨价" * b) for b in range(4)] for a in range(4)] for k in PERSONA_KEYS], float)
    read_latents = np.array([[[read_latent(k, "优惠" * a + "涨价" * b) for b in range(4)] for a in range(4)] for k in PERSONA_KEYS])
    read = read_table[:, pos, neg].T
    read_lat = read_latents[:, pos, neg].T

    # tabular and planted targets
    duration = np.maximum(1, np.round(rng.lognormal(1.4, 0.7, n))).astype(np.int64)
    user_cnt = np.round(rng.lognormal(8.0, 0.5, n)).astype(np.int64) + 50
    price0 = price[first]
    m = {"entry": entry.mean(1), "action": action.mean(1), "read": read.mean(1), "state": state.mean(1)}
    log_watch = np.log(user_cnt) - 1.2 + 0.35 * (m["entry"] - 3) + 0.1 * np.log(duration) + rng.normal(0, 0.15, n)
    conv = -4.0 + 0.45 * (m["action"] - 3) + 0.35 * (m["read"] - 3) + 0.25 * (m["state"] - 3) + rng.normal(0, 0.2, n)
    log_buyers = np.maximum(log_watch + conv, 0.0)
    log_orders = log_buyers + np.abs(rng.normal(0, 0.2, n))
    log_gmv = log_orders + 0.6 * np.log(price0) + 0.3 * (m["read"] - 3) + rng.normal(0, 0.2, n)
    watch = _softmax(0.6 * entry + WATCH_PRIOR + rng.normal(0, 0.3, (n, P)))
    pay = _softmax(0.7 * action + 0.4 * read + np.log(watch) + rng.normal(0, 0.3, (n, P)))

    pitches = pd.DataFrame({
        "index": np.arange(n, dtype=np.int64),
        "start": start_str,
        "title": [f"{TITLE_HEADS[a]}！{TITLE_TAILS[b]}" for a, b in zip(rng.integers(0, len(TITLE_HEADS), n), rng.integers(0, len(TITLE_TAILS), n))],
        "prod": [names[j] for j in first],
        "duration": duration,
        "user_cnt": user_cnt,
        "text": texts,
        **{c: tf[c].to_numpy() for c in tf.columns},
        "log_gmv": log_gmv,
        "log_deal_order_cnt": log_orders,
        "log_live_deal_user_cnt": log_buyers,
        "log_watch_user_cnt": log_watch,
        **dict(zip(WATCH_TARGETS, watch.T)),
        **dict(zip(PAY_TARGETS, pay.T)),
    })
    features = {"entry": entry, "action": action, "read": read, "state": state}
    state_exp, action_exp = state_action(expected_score(buy_lat))
    features |= {"entry" + EXPECTED: expected_score(entry_lat), "action" + EXPECTED: action_exp,
                 "read" + EXPECTED: expected_score(read_lat), "state" + EXPECTED: state_exp}
    if draw_temperature is not None:  # the integers a sampling model answers; the targets above stay
        draws = np.random.default_rng([seed, 1])
        entry, read = draw_scores(draws, entry_lat, draw_temperature), draw_scores(draws, read_lat, draw_temperature)
        state, action = state_action(draw_scores(draws, buy_lat, draw_temperature))
        features |= {"entry": entry, "action": action, "read": read, "state": state}
    return pitches, showcase, features


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def write_synthetic(out: str | Path, pitches: pd.DataFrame, showcase: dict[str, list],
                    features: dict[str, np.ndarray]) -> None:
    """Write ``pitches.csv``, ``goods.json``, the four feature ``.npy`` (and their ``*_expected.npy`` when
    ``features`` has them) and ``index.npy``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pitches.to_csv(out / "pitches.csv", index=False, float_format="%.7g")
    (out / "goods.json").write_text(json.dumps(showcase, ensure_ascii=False), encoding="utf-8")
    for name in (*LLM_FEATURES, *(f + EXPECTED for f in LLM_FEATURES)):
        if name in features:
            np.save(out / f"{name}.npy", features[name].astype(np.float64))
    np.save(out / "index.npy", pitches["index"].to_numpy(np.int64))


def main(argv: Sequence[str] | None = None) -> int:
    ap = command_parser(
        "make-synthetic",
        description="Write synthetic pitches.csv + goods.json + entry/state/action/read/index .npy "
                    "(features as the simulator scores them) and entry_expected.npy ... (the expected scores of "
                    "the simulator's score distribution) with a planted signal in the targets.")
    ap.add_argument("--n", type=positive_int, required=True, help="number of pitches")
    ap.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--draw-temperature", type=non_negative_float, metavar="T",
                    help="write the integer matrices as draws from the simulator's score distribution at "
                         "temperature T (0.2: a model sampling at the method's temperature) instead of its modes; "
                         "targets, pitches and expected scores stay the same")
    args = ap.parse_args(argv)
    pitches, showcase, features = make_synthetic(args.n, args.seed, args.draw_temperature)
    write_synthetic(args.out, pitches, showcase, features)
    print(f"make-synthetic: wrote {args.n} pitches (pitches.csv, goods.json, the feature .npy files) to {args.out}")
    return 0
