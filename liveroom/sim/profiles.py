"""How each provider answers a fault: one table per provider, fault kind -> (HTTP status, body).

Every row follows ``docs/PROVIDERS.md`` (section and source in the comment
beside it). Where a provider documents the code but not the HTTP status or
the message, the comment says which documented behaviour stands in. A message
the simulator words itself (not quoted from a source) ends in ``(simulated)``;
a quoted one is kept verbatim, because the live wording is what a client sees.

Kinds (what the chat simulator answers them for):

=================  ==========================================================
``429``            ``--p-429``: a rate-limit rejection at random
``rate_limit``     ``--rpm-limit``: over the requests-per-minute window
``token_limit``    ``--tpm-limit``: over the tokens-per-minute window
``cap``            ``--max-inflight``: over the concurrency cap
``quota``          ``--p-quota``: a quota or plan limit used up (fatal)
``arrears``        ``--arrears-after``: the account is out of money (fatal)
``auth``           a wrong key (``--api-key``)
``auth_missing``   no ``Authorization`` header
``content_filter`` ``--p-content-filter``; None: the provider answers 200 with
                   ``finish_reason: "content_filter"`` instead
``500``, ``503``   server errors
=================  ==========================================================

Messages may hold ``{limit}``, ``{used}``, ``{requested}``, ``{wait}``
(seconds, one decimal), ``{wait_ms}``, ``{retry}`` (``--retry-after`` as
``Retry-After`` writes it) and ``{model}``, filled in by :meth:`Profile.render`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

#: (HTTP status, JSON body) of one answer
Answer = tuple[int, dict[str, Any]]

KINDS = ("429", "rate_limit", "token_limit", "cap", "quota", "arrears", "auth", "auth_missing", "content_filter",
         "500", "503")


def _oai(status: int, message: str, type_: str, code: str | None) -> Answer:
    """OpenAI's shape (PROVIDERS.md section 2): ``{"error": {message, type, param, code}}``."""
    return status, {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _zp(status: int, code: str, message: str) -> Answer:
    """Zhipu's shape (section 2): ``{"error": {"code": "<digits as a string>", "message"}}``."""
    return status, {"error": {"code": code, "message": message}}


def _ds(status: int, code: str, message: str) -> Answer:
    """DashScope compatible mode (section 2): ``type`` repeats ``code``, ``param`` null."""
    return status, {"error": {"code": code, "param": None, "message": message, "type": code}}


@dataclass(frozen=True)
class Profile:
    """One provider's answers and the top-level ids its error bodies carry."""

    name: str
    answers: Mapping[str, Answer | None]
    ids: tuple[str, ...] = ()  # "id" (chatcmpl-...) and/or "request_id" beside "error"

    def render(self, kind: str, serial: int, **values: Any) -> Answer | None:
        """The answer of ``kind`` with its message filled in and ids numbered by ``serial``;
        None where the provider answers it with a 200 (OpenAI's content filter)."""
        answer = self.answers[kind]
        if answer is None:
            return None
        status, body = answer
        err = dict(body["error"])
        if "{" in err["message"]:
            err["message"] = err["message"].format(**values)
        out: dict[str, Any] = {"error": err}
        for name in self.ids:
            out[name] = f"chatcmpl-sim{serial:012x}" if name == "id" else f"sim-{serial:012x}"
        return status, out

    def error(self, kind: str, serial: int, **values: Any) -> Answer:
        """:meth:`render` of a kind the provider answers with an error."""
        answer = self.render(kind, serial, **values)
        if answer is None:
            raise ValueError(f"{self.name} answers {kind} with a 200")
        return answer


# ----------------------------------------------------------------- OpenAI (PROVIDERS.md 1.3)

OPENAI = Profile("openai", {
    "429": _oai(429, "Rate limit reached for requests (simulated). Please try again in {retry}s.", "requests",
                "rate_limit_exceeded"),
    "rate_limit": _oai(429, "Rate limit reached: {limit} requests per minute. Please try again in {wait}s.",
                       "requests", "rate_limit_exceeded"),
    # type "tokens", message as seen in BuilderIO/micro-agent#86
    "token_limit": _oai(429, "Rate limit reached for {model} on tokens per min (TPM): Limit {limit}, Used {used}, "
                             "Requested {requested}. Please try again in {wait_ms}ms.", "tokens",
                        "rate_limit_exceeded"),
    # OpenAI documents no concurrency cap: the closest is its requests rate limit (1.3); this is also
    # the cap answer of every profile under --cap-code none (a cap signal without a provider code)
    "cap": _oai(429, "Rate limit reached for requests (simulated): too many requests in flight.", "requests",
                "rate_limit_exceeded"),
    "quota": _oai(429, "You exceeded your current quota, please check your plan and billing details. (simulated)",
                  "insufficient_quota", "insufficient_quota"),
    # arrears is OpenAI's billing 429, the same insufficient_quota (1.3: fatal)
    "arrears": _oai(429, "You exceeded your current quota, please check your plan and billing details.",
                    "insufficient_quota", "insufficient_quota"),
    "auth": _oai(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
    "auth_missing": _oai(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
    # PROVIDERS.md names no content-filter error for OpenAI; the SDK's finish_reason takes
    # "content_filter" (openai-python src/openai/types/chat/chat_completion.py, Choice), so a 200
    "content_filter": None,
    "500": _oai(500, "The server had an error while processing your request. (simulated)", "server_error", None),
    "503": _oai(503, "The server is overloaded or not ready yet. (simulated)", "server_error",
                "service_unavailable"),
})

# ----------------------------------------------------------------- Zhipu (PROVIDERS.md 1.1)

ZHIPU = Profile("zhipu", {
    # 1305 "traffic limit triggered" / platform overload (ZP-code, ZP-faq): the random 429 of a busy
    # platform; its HTTP status is not documented, 429 as the HTTP table's rate rows
    "429": _zp(429, "1305", "该 API 已触发流量限制"),
    # 1303 "request frequency too high" (ZP-code only; status not documented: 429 as above)
    "rate_limit": _zp(429, "1303", "Request frequency of this API is too high, please reduce it. (simulated)"),
    # no token-per-minute code is documented; 1303 is the closest rate code
    "token_limit": _zp(429, "1303", "Request frequency of this API is too high, please reduce it. (simulated)"),
    # 1302 at 429, message as seen in kaitranntt/ccs#402
    "cap": _zp(429, "1302", "High concurrency usage of this API, please reduce concurrency or contact customer "
                            "service to increase limits"),
    # 1308 plan usage cap at 429, message as seen in dirge-code/dirge#818
    "quota": _zp(429, "1308", "已达到 5 小时的使用上限。您的限额将在 2026-08-25 07:41:44 重置。"),
    # 1113 at 429, message as seen in 7836246/cursor2api#30 (the live wording, not the page's)
    "arrears": _zp(429, "1113", "Insufficient balance or no resource package. Please recharge."),
    # 1000-1004 at 401 (HTTP table); 1002 "invalid token" worded as seen in FoundationAgents/MetaGPT#1373
    "auth": _zp(401, "1002", "Authorization Token非法，请确认Authorization Token正确传递。"),
    # 1001 "no Authentication header", seen at 401 in Mai-with-u/MaiBot#1151
    "auth_missing": _zp(401, "1001", "Header中未收到Authorization参数，无法进行身份验证。"),
    # 1301 at 400, message as seen in langchain4j/langchain4j#1079
    "content_filter": _zp(400, "1301", "系统检测到输入或生成内容可能包含不安全或敏感内容，"
                                       "请您避免输入易产生敏感内容的提示语，感谢您的配合。"),
    # business code "500" with HTTP 500 (HTTP table: server error)
    "500": _zp(500, "500", "Internal Error (simulated)"),
    # 503 is not in ZP-code's HTTP table (the SDK maps it to APIServerFlowExceedError); the body is the
    # closest documented server error, business code "500"
    "503": _zp(503, "500", "Service temporarily unavailable (simulated)"),
}, ids=("request_id",))  # "sometimes with top-level request_id" (section 2)

# ----------------------------------------------------------------- DashScope (PROVIDERS.md 1.2)

_DS_RPM = _ds(429, "Throttling.RateQuota", "Requests rate limit exceeded")  # DS-err-start, DS-rate

DASHSCOPE = Profile("dashscope", {
    # the compatible-mode code of throttling is not confirmed (section 6): the native one, in the compat shape
    "429": _DS_RPM,
    "rate_limit": _DS_RPM,
    # TPM: DS-err-start lists compat insufficient_quota beside Throttling.AllocationQuota, message per DS-rate;
    # a cap signal here, unlike OpenAI's billing code of the same name (section 2, collisions)
    "token_limit": _ds(429, "insufficient_quota", "You exceeded your current quota, please check your plan and "
                                                  "billing details."),
    # DashScope documents no concurrency cap (DS-rate: RPM/TPM enforced per second): its RPM throttle stands in
    "cap": _DS_RPM,
    # the free quota used up: fatal (QwenLM/qwen-code#1742)
    "quota": _ds(429, "Throttling.AllocationQuota", "Free allocated quota exceeded."),
    # 400 Arrearage, message as in DS-err and hsliuping/TradingAgents-CN#170
    "arrears": _ds(400, "Arrearage", "Access denied, please make sure your account is in good standing."),
    # 401 invalid_api_key (DS-err-start); the message is not quoted there
    "auth": _ds(401, "invalid_api_key", "Incorrect API key provided. (simulated)"),
    "auth_missing": _ds(401, "invalid_api_key", "Incorrect API key provided. (simulated)"),
    # 400 data_inspection_failed, message as seen in camel-ai/owl#432
    "content_filter": _ds(400, "data_inspection_failed", "Input data may contain inappropriate content."),
    # Alibaba Cloud's common server codes (not confirmed on a Model Studio page)
    "500": _ds(500, "InternalError", "An internal error has occurred (simulated)"),
    "503": _ds(503, "ServiceUnavailable", "The service is temporarily unavailable (simulated)"),
}, ids=("id", "request_id"))  # as in the compat bodies seen (section 2)

PROFILES: dict[str, Profile] = {p.name: p for p in (OPENAI, ZHIPU, DASHSCOPE)}
