"""What a provider's answer means: its error codes, read from docs/PROVIDERS.md, and what a server sends.

The code tables of :mod:`liveroom.async_client.providers` are checked against
the tables of docs/PROVIDERS.md section 1 as that file stands (parsed here, not
copied): every code a table there gives a category has a rule here with that
category's action, and every code here is in that provider's table. Then the
readers of error answers, rate-limit headers and odd completions.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from liveroom.async_client.errors import Fatal, Filtered, Rejected, Retryable
from liveroom.async_client.providers import DASHSCOPE, LLAMACPP, OPENAI, ZHIPU, Provider, rule_for
from liveroom.async_client.transport import http_error, rate_window, read_completion, reset_seconds, retry_after

DOC = Path(__file__).resolve().parent.parent / "docs" / "PROVIDERS.md"
#: the section of docs/PROVIDERS.md that holds each provider's error codes
SECTIONS = {"1.1": ZHIPU, "1.2": DASHSCOPE, "1.3": OPENAI, "1.5": LLAMACPP}
#: the engine's actions for each of the document's categories (the engine splits ``cap`` in two)
ACTIONS = {"fatal": {"fatal"}, "cap": {"cap", "rate"}, "filter": {"filter"}, "request": {"request"},
           "retry": {"retry"}}
TICKED = re.compile(r"`([^`]+)`")
CODE = re.compile(r"[A-Za-z0-9_.]+")


def section(text: str, number: str) -> list[str]:
    """The lines of ``### number ...`` up to the next heading of its level or above."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"### {number} "))
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"#{1,3} ", lines[i])), len(lines))
    return lines[start + 1:end]


def tables(lines: list[str]) -> list[list[dict[str, str]]]:
    """The markdown tables among ``lines``: each a list of rows, a row a dict header -> cell."""
    out: list[list[dict[str, str]]] = []
    header: list[str] | None = None
    for line in lines:
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        if header is None:
            header, rows = cells, []
            out.append(rows)
        elif not set("".join(cells)) <= set("-: "):
            rows.append(dict(zip(header, cells)))
    return out


def codes_in(cell: str) -> list[str]:
    """The error codes a cell names: code-shaped backticked words outside parentheses, or bare digits."""
    cell = re.sub(r"\([^()]*\)", "", cell)
    ticked = [t for t in TICKED.findall(cell) if CODE.fullmatch(t)]
    return ticked or ([cell] if cell.isdigit() else [])


def category_of(cell: str) -> str | None:
    """The category a cell gives: the one after an arrow when there is one, else the first."""
    named = [t for t in TICKED.findall(cell.split("→")[-1]) if t in ACTIONS]
    return named[0] if named else None


def documented(provider_section: str) -> list[tuple[str, str, str]]:
    """(code, message, category) of every row of the section's tables that names both."""
    out = []
    for table in tables(section(DOC.read_text(encoding="utf-8"), provider_section)):
        for row in table:
            code_col = next((h for h in row if h.startswith("code") or "error.code" in h or h == "HTTP, body"), None)
            cat_col = next((h for h in row if h == "category"), None)
            if code_col is None or cat_col is None or (category := category_of(row[cat_col])) is None:
                continue
            message = next((row[h] for h in row if h.startswith(("message", "meaning"))), "")
            out += [(code, message, category) for code in codes_in(row[code_col])]
    return out


@pytest.mark.parametrize("number, provider", SECTIONS.items(), ids=[p.name for p in SECTIONS.values()])
def test_every_code_in_providers_md_means_there_what_it_means_here(number: str, provider: Provider):
    rows = documented(number)
    assert rows, f"no error-code rows found in section {number} of {DOC.name}"
    for code, message, category in rows:
        rule = rule_for(provider, code, message)
        assert rule is not None and rule.action in ACTIONS[category], (number, code, message, category, rule)


@pytest.mark.parametrize("number, provider", SECTIONS.items(), ids=[p.name for p in SECTIONS.values()])
def test_every_code_here_is_in_its_providers_table(number: str, provider: Provider):
    listed = {code for code, _, _ in documented(number)}
    for code in provider.errors.codes:
        # a family name stands for the document's dotted codes of that family ("the Throttling codes")
        assert code in listed or any(c.startswith(code + ".") for c in listed), (provider.name, code)


def test_what_the_tables_leave_to_the_engine_is_decided_as_their_notes_say():
    assert rule_for(None, "insufficient_quota").action == "fatal"  # no provider known: OpenAI's meaning
    assert rule_for(DASHSCOPE, "InternalError.Algo.DataInspectionFailed").action == "filter"  # matched by its end
    assert rule_for(None, "nothing-known") is None


@pytest.mark.parametrize("text, seconds", [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1.5s", 1.5),
                                           ("1h0m0s", 3600.0), ("2", 2.0), ("0s", 0.0), ("soon", None),
                                           ("", None), ("5x", None), ("-1s", None), (None, None)])
def test_reset_durations_as_openai_writes_them(text, seconds):
    assert reset_seconds(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_rate_limit_headers_and_junk():
    w = rate_window({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s",
                     "x-ratelimit-remaining-tokens": "lots", "x-ratelimit-reset-tokens": "20ms"})
    assert w is not None and (w.requests, w.requests_reset, w.tokens, w.tokens_reset) == (0, 360.0, None, 0.02)
    assert rate_window({"content-type": "application/json"}) is None
    for junk in ("soon", "NaN", "inf", "Wed, 99 Foo", "-"):
        assert retry_after({"Retry-After": junk}) is None


def test_a_completion_with_odd_fields_gets_sane_defaults():
    body = {"choices": [{"message": {"content": "{}"}, "finish_reason": 7}], "usage": "lots", "model": None}
    reply = read_completion(body)
    assert (reply.text, reply.usage, reply.model, reply.finish_reason) == ("{}", {}, "", "")
    empty = read_completion({"choices": [{"message": {"content": None}, "finish_reason": "length"}]})
    assert empty.text == "" and empty.finish_reason == "length"
    with pytest.raises(Filtered, match="^content_filter: finish_reason content_filter"):
        read_completion({"choices": [{"message": {"content": None}, "finish_reason": "content_filter"}]})


@pytest.mark.parametrize("status, body, kind, signal", [
    (429, b'{"error": {"code": "1113", "message": "Insufficient balance"}}', Fatal, None),
    (429, b'{"error": {"code": "1302", "message": "High concurrency"}}', Retryable, "cap"),
    (429, b'{"error": {"code": "1305", "message": "busy"}}', Retryable, "rate"),
    (400, b'{"error": {"code": "1301", "message": "unsafe"}}', Filtered, None),
    (400, b'{"error": {"code": "data_inspection_failed", "type": "data_inspection_failed"}}', Filtered, None),
    (400, b'{"error": {"code": "Arrearage", "message": "Access denied"}}', Fatal, None),
    (400, b'{"error": {"code": "context_length_exceeded", "message": "too long"}}', Rejected, None),
    (429, b'{"error": {"code": "rate_limit_exceeded", "message": "Request too large for gpt-4o"}}', Rejected, None),
    (429, b"<html>Too Many Requests</html>", Retryable, "rate"),
    (502, b"Bad Gateway", Retryable, None),
])
def test_what_an_error_answer_means_comes_from_its_code_first(status, body, kind, signal):
    err = http_error(status, {}, body, None, "http://x/v1")
    assert type(err) is kind, err
    if isinstance(err, Retryable):
        assert err.signal == signal
    if isinstance(err, Fatal):
        assert "then run the same command again to resume" in str(err) and "\n" not in str(err)
