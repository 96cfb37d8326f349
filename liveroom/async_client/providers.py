"""What differs between providers, as data: one frozen :class:`Provider` profile each.

Every value below comes from ``docs/PROVIDERS.md``, which names its source (a
provider page, an SDK file at a commit, a public issue thread). A value that
page marks "not documented" or "not confirmed" is not guessed: it is a
setting (a ``bin/batch`` flag) whose default here is the conservative choice,
and the comment beside it says so. Fields are grouped by what uses them
(``Provider.batch`` for ``bin/batch``, ``Provider.errors`` for what an error
code means to the engine: :class:`Rule`, looked up by :func:`rule_for`).

No provider documents rate-limit figures that hold for every account (they go
by account tier and model, PROVIDERS.md section 3), so a profile holds none:
the engine learns the limits from the answers (:mod:`.concurrency`) and from
``x-ratelimit-*`` headers where a server sends them (:mod:`.limits`).

The profile of a run is ``--provider NAME`` or, when not given, the one whose
host the base URL names (:func:`detect`); any other server is ``generic``,
which behaves as ``bin/batch`` always has. Error codes are recognised
whatever the host, since they do not collide, except ``insufficient_quota``:
OpenAI's billing error (fatal), DashScope's token throttle (a rate limit),
decided by the provider (OpenAI's meaning when it is not known).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from ..errors import InputError

#: the API base URL when neither ``--base-url`` nor ``$OPENAI_BASE_URL`` names one
DEFAULT_BASE_URL = "https://api.openai.com/v1"

#: how ``submit`` learns that an upload is usable:
#: ``poll`` GET /files/{id} until it is ready, a 404 meaning "not visible yet";
#: ``optional`` ask, but a 404 means the route is missing: trust the upload reply;
#: ``absent`` never ask: trust the upload reply
FileStatus = Literal["poll", "optional", "absent"]
FILE_STATUS: tuple[FileStatus, ...] = ("poll", "optional", "absent")

MB = 1_000_000  # limits stated in MB are kept under both 10^6 and 2^20 readings


@dataclass(frozen=True)
class BatchProfile:
    """The Batch API of a provider: paths, file limits, completion window, file-status call."""

    endpoint: str = "/v1/chat/completions"   # the 'url' of every request line and the batch endpoint
    max_requests: int = 50_000               # requests per file
    max_bytes: int = 200_000_000             # bytes per file
    max_line_bytes: int | None = None        # bytes per request line; None: no limit known
    completion_window: str | None = "24h"    # sent when a batch is created; None: the field is left out
    window_hours: tuple[int, int] | None = (24, 24)  # whole hours --completion-window may name; None: any
    file_status: FileStatus = "poll"
    auto_delete_input_file: bool = False     # the create call documents auto_delete_input_file
    list_limit: int = 100                    # page size when listing batches (after/limit/has_more)
    api: bool = True                         # False: no Batch API; the files are run by the user's runner

    def check_window(self, window: str | None, provider: str) -> str | None:
        """``window`` when this provider takes it (None: the profile's default); else InputError."""
        if window is None:
            return self.completion_window
        if self.window_hours is None:
            return window
        lo, hi = self.window_hours
        m = re.fullmatch(r"([0-9]{1,4})h", window)
        if m is None or not lo <= int(m.group(1)) <= hi:
            allowed = f"{lo}h" if lo == hi else f"whole hours from {lo}h to {hi}h"
            raise InputError(f"--completion-window {window!r} is not one {provider} takes: {allowed}")
        return window


#: what the engine does with an error code (docs/PROVIDERS.md's categories, ``cap`` split in two):
#: ``fatal`` stop the run with one line naming the code and what to do; ``cap`` a concurrency cap:
#: the limit drops at once; ``rate`` a rate or load limit: this request waits, and the limit drops
#: only when such answers are a large share of the recent ones; ``filter`` the content filter: this
#: request fails with reason ``content_filter``; ``request`` this request fails; ``retry`` try again
Action = Literal["fatal", "cap", "rate", "filter", "request", "retry"]


@dataclass(frozen=True)
class Rule:
    """What one error code means; ``says`` ends a fatal line (``{endpoint}`` is filled in).

    ``when`` narrows the rule to messages holding that text (case-insensitive): one code
    can mean two things, told apart by its message (DashScope's free quota).
    """

    action: Action
    says: str = ""
    when: str = ""


Codes = Mapping[str, tuple[Rule, ...]]  # error code (as a string) -> its rules, the first that fits wins


@dataclass(frozen=True)
class ErrorProfile:
    """What a provider's error codes mean, and which ``finish_reason`` of a 200 is its content filter."""

    codes: Codes = field(default_factory=dict)
    filter_finish_reasons: frozenset[str] = frozenset()  # finish_reason of a 200 reply that was filtered

    @property
    def content_filter(self) -> frozenset[str]:
        """The codes of the content filter."""
        return frozenset(c for c, rules in self.codes.items() if any(r.action == "filter" for r in rules))


def _rules(action: Action, says: str, *codes: str) -> dict[str, tuple[Rule, ...]]:
    return {c: (Rule(action, says),) for c in codes}


AUTH = "the key was refused: check OPENAI_API_KEY and the endpoint {endpoint}"
RESUME = ", then run the same command again to resume"

# docs/PROVIDERS.md 1.1 (ZP-code: the Z.ai / bigmodel error-code page); a code's HTTP status is not
# looked at: 1113 (arrears) comes as a 429, 1301 (filter) as a 400
ZHIPU_CODES: Codes = {
    **_rules("fatal", "Zhipu: authentication failed: check OPENAI_API_KEY and the endpoint {endpoint}",
             "1000", "1001", "1002", "1003", "1004"),
    **_rules("fatal", "Zhipu: account read/write error: check the account in the console", "1100"),
    **_rules("fatal", "Zhipu: the account is not active: activate it in the console", "1110"),
    **_rules("fatal", "Zhipu: the account does not exist: check OPENAI_API_KEY", "1111"),
    **_rules("fatal", "Zhipu: the account is locked: contact Zhipu", "1112", "1121"),
    **_rules("fatal", "Zhipu: the account is in arrears: recharge it or buy a resource package" + RESUME, "1113"),
    # the page says "try again later": stopping costs nothing, a few minutes later the same command resumes
    **_rules("fatal", "Zhipu: the account cannot be reached now: try again later" + RESUME, "1120"),
    **_rules("fatal", "Zhipu: the model does not exist or does not take this call: check --model", "1211", "1212"),
    **_rules("fatal", "Zhipu: no permission for this API, or the API is offline or unknown: check the base URL",
             "1220", "1221", "1222"),
    **_rules("fatal", "Zhipu: the daily call limit of this API is reached: run again tomorrow", "1304"),
    **_rules("fatal", "Zhipu: a usage cap of the plan is reached (the message says when it resets)" + RESUME,
             "1308", "1310"),
    **_rules("fatal", "Zhipu: the plan expired or does not include this model: renew it or check --model",
             "1309", "1311"),
    **_rules("fatal", "Zhipu: requests are restricted under the fair-use policy: ask for unblocking in the console",
             "1313"),
    **_rules("request", "", "1200", "1210", "1213", "1214", "1215", "1231", "1261"),
    **_rules("filter", "", "1300", "1301"),
    **_rules("cap", "", "1302"),               # too many requests in flight: lower the concurrency
    **_rules("rate", "", "1303", "1305", "1312"),  # request frequency, traffic limit, model overloaded
    **_rules("retry", "", "500", "1230", "1234"),
}

_DS_FREE = Rule("fatal", "DashScope: the free quota is used up: allow paid use in the console" + RESUME,
                "free allocated quota")

# docs/PROVIDERS.md 1.2 (DS-err, DS-err-start, DS-rate): native and compatible-mode spellings
DASHSCOPE_CODES: Codes = {
    **_rules("fatal", "DashScope: the account is in arrears (overdue payment): settle it in the console" + RESUME,
             "Arrearage"),
    **_rules("fatal", AUTH, "InvalidApiKey", "invalid_api_key"),
    **_rules("fatal", "DashScope: access denied (no permission, service not activated or overdue payment): "
                      "check the account in the console", "AccessDenied", "access_denied"),
    **_rules("fatal", "DashScope: the model or path does not exist: check --model and the base URL",
             "ModelNotFound", "NotFound"),
    **_rules("filter", "", "DataInspectionFailed", "data_inspection_failed"),
    # one InvalidParameter fails every request: a model that thinks only when streaming
    "InvalidParameter": (Rule("fatal", "DashScope: this model thinks only when streaming: add "
                                       "--extra-body '{{\"enable_thinking\": false}}'", "enable_thinking"),
                         Rule("request")),
    # the TPM throttle: compatible mode's insufficient_quota is listed beside it (a cap here, unlike OpenAI's)
    "Throttling.AllocationQuota": (_DS_FREE, Rule("rate")),
    "insufficient_quota": (_DS_FREE, Rule("rate")),
    **_rules("rate", "", "Throttling.RateQuota", "Throttling"),
    **_rules("retry", "", "InternalError", "ServiceUnavailable"),
}

_BILLING = "the account's quota is used up: check the plan and billing details" + RESUME

# docs/PROVIDERS.md 1.3 (OAI-err and the bodies seen)
OPENAI_CODES: Codes = {
    **_rules("fatal", AUTH, "invalid_api_key"),
    **_rules("fatal", _BILLING, "insufficient_quota", "credit_balance_exhausted", "organization_spend_limit_exceeded",
             "project_spend_limit_exceeded", "organization_usage_limit_exceeded"),
    # "Request too large ... (TPM)" comes as rate_limit_exceeded too, and never succeeds when resent
    "rate_limit_exceeded": (Rule("request", "", "request too large"), Rule("rate")),
    **_rules("request", "", "context_length_exceeded"),
}

# docs/PROVIDERS.md 1.5 (llama.cpp server-common.cpp format_error_response)
LLAMACPP_CODES: Codes = {**_rules("request", "", "exceed_context_size_error")}


@dataclass(frozen=True)
class LogprobsProfile:
    """Whether a provider's chat replies carry token probabilities (``logprobs``, ``top_logprobs``),
    docs/PROVIDERS.md section 7."""

    returned: bool = True           # False: the API has no such parameter (the run goes on without them)
    max_top: int | None = None      # the most top_logprobs it takes; None: no cap known (a server's own)
    refusing: str = ""              # regex matched at the start of a model name: models that refuse the parameter


@dataclass(frozen=True)
class Provider:
    """One provider's defaults, grouped by what uses them."""

    name: str
    base_url: str | None            # its API base URL; None: the user names it (generic)
    hosts: tuple[str, ...] = ()     # a base URL on one of these hosts (or under one) is this provider
    batch: BatchProfile = field(default_factory=BatchProfile)
    errors: ErrorProfile = field(default_factory=ErrorProfile)
    logprobs: LogprobsProfile = field(default_factory=LogprobsProfile)


OPENAI = Provider(
    "openai", DEFAULT_BASE_URL, ("api.openai.com",),
    # url/endpoint: OAI-SDK src/openai/types/batch_create_params.py; 50,000 requests and 200 MB per file;
    # completion_window Required[Literal["24h"]]; files.retrieve exists (src/openai/resources/files.py);
    # list limit 1-100 (resources/batches.py). docs/PROVIDERS.md section 4.
    BatchProfile(),
    # finish_reason "content_filter": the SDK's Choice (src/openai/types/chat/chat_completion.py)
    ErrorProfile(OPENAI_CODES, frozenset({"content_filter"})),
    # top_logprobs "between 0 and 20" (OAI-SDK completion_create_params.py); the o-series reasoning models
    # refuse logprobs (403 "You are not allowed to request logprobs from this model", deepeval#2184)
    LogprobsProfile(max_top=20, refusing=r"o[0-9]"),
)

ZHIPU = Provider(
    "zhipu", "https://open.bigmodel.cn/api/paas/v4", ("open.bigmodel.cn", "api.z.ai"),
    BatchProfile(
        # "目前支持 /v4/chat/completions" (create-batch page); the SDK's /v1 type hint is stale
        endpoint="/v4/chat/completions",
        # "单个文件最多支持 50000 个请求且大小不超过 100M" (batch guide); over 100 MB is HTTP 435 (ZP-code).
        # 95 MB stays under 100 MB whichever MB is meant.
        max_requests=50_000, max_bytes=95 * MB,
        max_line_bytes=None,  # not documented
        # completion_window is not a field of the documented create body (input_file_id, endpoint,
        # auto_delete_input_file, metadata): not sent unless --completion-window names it; replies show "24h"
        completion_window=None, window_hours=(24, 24),
        # GET /files/{id}: retrieve is commented out in ZAI-SDK src/zai/api_resource/files/files.py and
        # ZHIPU-SDK zhipuai/api_resource/files.py, and absent from the docs' file API
        file_status="absent",
        auto_delete_input_file=True,  # documented, default true (SDK batches.py: auto_delete_input_file=True)
        list_limit=100,  # SDK docstring "between 1 and 100" (BatchListParams says default 10)
    ),
    # 1301 unsafe content (seen as HTTP 400, langchain4j#1079), 1300 blocked by policy (ZP-code);
    # finish_reason "sensitive": blocked by the safety review (查询异步结果 page)
    ErrorProfile(ZHIPU_CODES, frozenset({"sensitive"})),
    # no logprobs parameter in the API reference nor in ZAI-SDK chat/completions.py create()
    LogprobsProfile(returned=False),
)

DASHSCOPE = Provider(
    "dashscope", "https://dashscope.aliyuncs.com/compatible-mode/v1",
    # the international endpoint: https://www.alibabacloud.com/help/tc/model-studio/batch-interfaces-compatible-with-openai
    ("dashscope.aliyuncs.com", "dashscope-intl.aliyuncs.com"),
    BatchProfile(
        endpoint="/v1/chat/completions",  # with the OpenAI SDK on the compatible base URL
        max_requests=50_000,  # not confirmed (the figure, the same as OpenAI's and Zhipu's)
        max_bytes=480 * MB,  # 500 MB for purpose=batch (upload-file-api page); kept under it
        max_line_bytes=6 * MB,  # not confirmed (the issue says 6 MB): --max-line-bytes
        # 24h is what Alibaba's own example sends; 24h..336h is the range, not confirmed
        completion_window="24h", window_hours=(24, 336),
        file_status="optional",  # GET /files/{id} not confirmed: a 404 means the route is missing
        list_limit=20,  # paging not confirmed: OpenAI's default page size
    ),
    # DataInspectionFailed / data_inspection_failed: "Input or output data may contain inappropriate content"
    # (DS-err-2024; compat bodies in camel-ai/owl#432)
    ErrorProfile(DASHSCOPE_CODES),
    LogprobsProfile(max_top=5),  # top_logprobs 0..5 (Qwen API reference); only some models return them
)

# any OpenAI-compatible server: bin/batch as it always was; a --completion-window is passed on unchecked
GENERIC = Provider("generic", None, (), BatchProfile(window_hours=None))

# local servers (PROVIDERS.md 1.4, 1.5): no host to detect, no default address: the user names it.
# vLLM has no Batch API; its offline runner ``vllm run-batch -i IN -o OUT --model M`` takes the same request
# lines (vllm/entrypoints/openai/run_batch.py: BatchRequestInput, chat only at url "/v1/chat/completions")
# and streams the file line by line, so it has no file or line limit (PROVIDERS.md section 4.1)
VLLM = Provider("vllm", None, batch=BatchProfile(max_requests=10**9, max_bytes=10**15, completion_window=None,
                                                 window_hours=None, file_status="absent", api=False))
LLAMACPP = Provider("llamacpp", None, errors=ErrorProfile(LLAMACPP_CODES))
# DeepSeek's chat API (bin/score only: no Batch API): top_logprobs at most 20; the reasoning model refuses
# logprobs ("Setting logprobs, top_logprobs will trigger an error", its reasoning-model guide), PROVIDERS.md 7
DEEPSEEK = Provider("deepseek", "https://api.deepseek.com/v1", ("api.deepseek.com",),
                    logprobs=LogprobsProfile(max_top=20, refusing=r"deepseek-reasoner"))

#: the providers of bin/batch (each has a batch profile; vllm's files go to ``vllm run-batch``, not to an API)
BATCH_PROVIDERS: dict[str, Provider] = {p.name: p for p in (OPENAI, ZHIPU, DASHSCOPE, GENERIC, VLLM)}
#: the providers of bin/score: the batch ones and the local servers
CHAT_PROVIDERS: dict[str, Provider] = {**BATCH_PROVIDERS, LLAMACPP.name: LLAMACPP, DEEPSEEK.name: DEEPSEEK}


def detect(base_url: str, known: Mapping[str, Provider] = BATCH_PROVIDERS) -> Provider:
    """The provider of ``known`` whose host ``base_url`` names (or a subdomain of it); ``generic`` for any other."""
    host = (urlsplit(base_url).hostname or "").lower()
    for p in known.values():
        if any(host == h or host.endswith("." + h) for h in p.hosts):
            return p
    return GENERIC


def resolve_provider(name: str | None, base_url: str, known: Mapping[str, Provider] = BATCH_PROVIDERS) -> Provider:
    """``--provider`` when given (one of ``known``), else the one :func:`detect` finds."""
    if name is None:
        return detect(base_url, known)
    if name not in known:
        raise InputError(f"--provider: unknown provider {name!r}; choose from {', '.join(known)}")
    return known[name]


def default_base_url(name: str | None) -> str:
    """The base URL a command uses when none is given: the named provider's, else OpenAI's."""
    p = CHAT_PROVIDERS.get(name or "")
    return (p.base_url if p is not None else None) or DEFAULT_BASE_URL


def add_provider_argument(p: argparse.ArgumentParser, default_text: str | None = None,
                          known: Mapping[str, Provider] = BATCH_PROVIDERS, what: str = "batch paths and limits") -> None:
    """``--provider``, the same for every command that has it."""
    p.add_argument("--provider", choices=tuple(known), default=None,
                   help=f"the provider's defaults: base URL, {what} (default: "
                        + (default_text or "detected from the base URL's host; generic for any other") + ")")


# every code of every provider, for a server whose provider is not known: codes do not collide
# but for insufficient_quota, OpenAI's (fatal) before DashScope's (a rate limit), as it always was
_ANY: dict[str, tuple[Rule, ...]] = {}
for _p in (OPENAI, ZHIPU, DASHSCOPE, LLAMACPP):
    for _code, _rules_of in _p.errors.codes.items():
        _ANY.setdefault(_code, _rules_of)


def rule_for(provider: Provider | None, code: str, message: str = "") -> Rule | None:
    """What error ``code`` means: in ``provider``'s table first, then in any provider's; None when unknown.

    A dotted code is also looked up by its last part (``InternalError.Algo.DataInspectionFailed``).
    """
    if not code:
        return None
    own = provider.errors.codes if provider is not None else {}
    rules = own.get(code) or _ANY.get(code)
    if rules is None and "." in code:
        last = code.rsplit(".", 1)[-1]
        rules = own.get(last) or _ANY.get(last)
    if rules is None:
        return None
    low = message.lower()
    return next((r for r in rules if not r.when or r.when in low), None)


def is_content_filter(code: str | None) -> bool:
    """Whether an error code is a content filter's, whatever the provider (the codes do not collide).

    A dotted code is also matched by its last part: DashScope has been seen sending
    ``InternalError.Algo.DataInspectionFailed`` (QwenLM/qwen-code#3145).
    """
    rule = rule_for(None, code or "")
    return rule is not None and rule.action == "filter"


#: every provider's finish_reason of a filtered 200 reply
FILTER_FINISH: frozenset[str] = frozenset().union(*(p.errors.filter_finish_reasons for p in BATCH_PROVIDERS.values()))


def filtered_finish(reason: str | None) -> bool:
    """Whether a 200 reply's ``finish_reason`` says its content was filtered."""
    return bool(reason) and reason in FILTER_FINISH


def logprobs_for(provider: Provider | None, model: str, top: int) -> tuple[int | None, str | None]:
    """The ``top_logprobs`` to ask of ``provider`` for ``model`` when ``top`` is wanted (None: do not ask
    at all) and the one line that says why it differs; None for no line."""
    if provider is None:
        return top, None
    lp = provider.logprobs
    if not lp.returned:
        return None, (f"{provider.name} returns no token probabilities (no logprobs parameter): the run goes on "
                      "without them, each score its sampled integer")
    if lp.refusing and re.match(lp.refusing, model):
        return None, (f"{provider.name} refuses logprobs for model {model}: the run goes on without them, each "
                      "score its sampled integer")
    if lp.max_top is not None and top > lp.max_top:
        return lp.max_top, f"--top-logprobs {top}: {provider.name} takes at most {lp.max_top}; asking {lp.max_top}"
    return top, None
