"""What differs between providers, as data: one frozen :class:`Provider` profile each.

Every value below comes from ``docs/PROVIDERS.md``, which names its source (a
provider page, an SDK file at a commit, a public issue thread). A value that
page marks "not documented" or "not confirmed" is not guessed: it is a
setting (a ``bin/batch`` flag) whose default here is the conservative choice,
and the comment beside it says so. Fields are grouped by what uses them
(``Provider.batch`` for ``bin/batch``, ``Provider.errors`` for reading error
codes), so the rate-limit settings and the full error-code table of the
provider-limits issue go into the same profiles as further groups.

The profile of a run is ``--provider NAME`` or, when not given, the one whose
host the base URL names (:func:`detect`); any other server is ``generic``,
which behaves as ``bin/batch`` always has.
"""

from __future__ import annotations

import argparse
import re
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


@dataclass(frozen=True)
class ErrorProfile:
    """What a provider's error codes mean; for now only which codes are its content filter."""

    content_filter: frozenset[str] = frozenset()        # error codes (as strings)
    filter_finish_reasons: frozenset[str] = frozenset()  # finish_reason of a 200 reply that was filtered


@dataclass(frozen=True)
class Provider:
    """One provider's defaults, grouped by what uses them."""

    name: str
    base_url: str | None            # its API base URL; None: the user names it (generic)
    hosts: tuple[str, ...] = ()     # a base URL on one of these hosts (or under one) is this provider
    batch: BatchProfile = field(default_factory=BatchProfile)
    errors: ErrorProfile = field(default_factory=ErrorProfile)


OPENAI = Provider(
    "openai", DEFAULT_BASE_URL, ("api.openai.com",),
    # url/endpoint: OAI-SDK src/openai/types/batch_create_params.py; 50,000 requests and 200 MB per file;
    # completion_window Required[Literal["24h"]]; files.retrieve exists (src/openai/resources/files.py);
    # list limit 1-100 (resources/batches.py). docs/PROVIDERS.md section 4.
    BatchProfile(),
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
    ErrorProfile(frozenset({"1300", "1301"}), frozenset({"sensitive"})),
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
    ErrorProfile(frozenset({"data_inspection_failed", "DataInspectionFailed"})),
)

# any OpenAI-compatible server: bin/batch as it always was; a --completion-window is passed on unchecked
GENERIC = Provider("generic", None, (), BatchProfile(window_hours=None))

PROVIDERS: dict[str, Provider] = {p.name: p for p in (OPENAI, ZHIPU, DASHSCOPE, GENERIC)}


def detect(base_url: str) -> Provider:
    """The provider whose host ``base_url`` names (or a subdomain of it); ``generic`` for any other."""
    host = (urlsplit(base_url).hostname or "").lower()
    for p in PROVIDERS.values():
        if any(host == h or host.endswith("." + h) for h in p.hosts):
            return p
    return GENERIC


def resolve_provider(name: str | None, base_url: str) -> Provider:
    """``--provider`` when given, else the one :func:`detect` finds."""
    if name is None:
        return detect(base_url)
    if name not in PROVIDERS:
        raise InputError(f"--provider: unknown provider {name!r}; choose from {', '.join(PROVIDERS)}")
    return PROVIDERS[name]


def default_base_url(name: str | None) -> str:
    """The base URL a command uses when none is given: the named provider's, else OpenAI's."""
    p = PROVIDERS.get(name or "")
    return (p.base_url if p is not None else None) or DEFAULT_BASE_URL


def add_provider_argument(p: argparse.ArgumentParser, default_text: str | None = None) -> None:
    """``--provider``, the same for every command that has it."""
    p.add_argument("--provider", choices=tuple(PROVIDERS), default=None,
                   help="the provider's defaults: base URL, batch paths and limits (default: "
                        + (default_text or "detected from the base URL's host; generic for any other") + ")")


def is_content_filter(code: str | None) -> bool:
    """Whether an error code is a content filter's, whatever the provider (the codes do not collide).

    A dotted code is also matched by its last part: DashScope has been seen sending
    ``InternalError.Algo.DataInspectionFailed`` (QwenLM/qwen-code#3145).
    """
    if not code:
        return False
    last = code.rsplit(".", 1)[-1]
    return any(c in p.errors.content_filter for p in PROVIDERS.values() for c in (code, last))


def filtered_finish(reason: str | None) -> bool:
    """Whether a 200 reply's ``finish_reason`` says its content was filtered."""
    return bool(reason) and any(reason in p.errors.filter_finish_reasons for p in PROVIDERS.values())
