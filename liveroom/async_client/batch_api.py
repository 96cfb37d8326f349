"""The OpenAI-compatible Batch API over aiohttp: files and batches.

Only what ``bin/batch`` needs: upload a request file (``POST /files``,
multipart, ``purpose=batch``), read a file's metadata and content, create,
retrieve, list (page by page) and cancel batches. Where a provider has no
``GET /files/{id}`` (Zhipu: see ``docs/PROVIDERS.md`` section 4), waiting for
an upload trusts the upload's own reply (:data:`~.providers.FILE_STATUS`). Every call is retried with the same
policy as chat requests (:mod:`.policy`): 408, 409, 429 (honouring
``Retry-After``), 5xx, timeouts and dropped connections are tried again;
401 and 403 raise :class:`~.errors.Fatal` (one line, exit status 2); other
4xx raise :class:`BatchAPIError`. The API key goes in the ``Authorization``
header only and is masked in every message.
"""

from __future__ import annotations

import asyncio
import mmap
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import orjson

from ..errors import LiveroomError
from .errors import Rejected, Retryable
from .policy import retry_policy
from .providers import FileStatus
from .transport import http_error, target, transport_errors

T = TypeVar("T")

FILE_READY = ("processed", "uploaded")  # OpenAI says processed; some providers stop at uploaded
FILE_FAILED = ("error", "failed", "deleted")


class BatchAPIError(LiveroomError):
    """The server refused a Batch API call (a 4xx other than the retryable ones)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FileFailed(BatchAPIError):
    """The server could not process an uploaded file."""


def _mask_secrets(path: Path, secrets: tuple[str, ...]) -> None:
    """Rewrite ``path`` with every secret masked, when it holds one (a server that echoes the key)."""
    raw = [x.encode() for x in secrets if len(x) >= 4]
    if not raw or path.stat().st_size == 0:
        return
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if all(m.find(x) < 0 for x in raw):
            return
    masked = path.with_name(path.name + ".masked")
    with open(path, "rb") as src, open(masked, "wb") as dst:
        for line in src:
            for x in raw:
                line = line.replace(x, b"***")
            dst.write(line)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(masked, path)


class BatchClient:
    """Calls ``{base_url}/files`` and ``{base_url}/batches``."""

    def __init__(self, base_url: str, api_key: str | None, *, timeout: float = 120.0,
                 upload_timeout: float = 1800.0, max_retries: int = 6, backoff: float = 1.0) -> None:
        self.target = target(base_url, api_key)  # credentials in the URL become the header
        self.target.require_key()  # before anything is sent
        self.base = self.target.base_url.rstrip("/")
        self._key = self.target.secrets  # what every message masks
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._upload_timeout = aiohttp.ClientTimeout(total=upload_timeout)
        self.max_retries = max_retries
        self.backoff = backoff
        self.calls = 0  # HTTP attempts, for reports
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> BatchClient:
        auth = self.target.authorization
        headers = {"Authorization": auth} if auth else {}
        self._session = aiohttp.ClientSession(headers=headers, timeout=self._timeout)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()

    # -- plumbing --------------------------------------------------------------------
    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            async for attempt in retry_policy(self.max_retries, self.backoff, 60.0):
                with attempt:
                    return await call()
        except Retryable as e:
            raise BatchAPIError(f"{e} (gave up after {self.max_retries + 1} attempts)", e.status) from None
        raise AssertionError("unreachable")

    def _check(self, status: int, headers: Any, body: bytes, what: str) -> None:
        if 200 <= status < 300:
            return
        error = http_error(status, headers, body, self._key, self.base, what)
        raise BatchAPIError(str(error), status) if isinstance(error, Rejected) else error

    async def _once(self, method: str, path: str, what: str, *, json: Any = None, data: Any = None,
                    timeout: aiohttp.ClientTimeout | None = None) -> bytes:
        assert self._session is not None, "use BatchClient as an async context manager"
        self.calls += 1
        kwargs: dict[str, Any] = {}
        if json is not None:
            kwargs["data"] = orjson.dumps(json)
            kwargs["headers"] = {"Content-Type": "application/json"}
        elif data is not None:
            kwargs["data"] = data
        if timeout is not None:
            kwargs["timeout"] = timeout
        with transport_errors(what, self._key):
            async with self._session.request(method, self.base + path, **kwargs) as resp:
                body = await resp.read()
                self._check(resp.status, resp.headers, body, what)
                return body

    async def _json(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        async def call() -> dict[str, Any]:
            body = await self._once(method, path, what, **kwargs)
            try:
                obj = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise Retryable(f"{what}: unreadable response body") from None
            if not isinstance(obj, dict):
                raise Retryable(f"{what}: response is not a JSON object")
            return obj

        return await self._retrying(call)

    # -- files -----------------------------------------------------------------------
    async def upload(self, path: Path) -> dict[str, Any]:
        """``POST /files`` with ``purpose=batch``; the file object (has ``id``)."""
        path = Path(path)

        async def call() -> dict[str, Any]:
            with open(path, "rb") as f:  # reopened on every attempt
                form = aiohttp.FormData()
                form.add_field("purpose", "batch")
                form.add_field("file", f, filename=path.name, content_type="application/jsonl")
                body = await self._once("POST", "/files", f"upload {path.name}", data=form,
                                        timeout=self._upload_timeout)
            try:
                obj = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise Retryable(f"upload {path.name}: unreadable response body") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
                raise BatchAPIError(f"upload {path.name}: the response has no file id")
            return obj

        return await self._retrying(call)

    async def get_file(self, file_id: str) -> dict[str, Any] | None:
        """A file's metadata, or None while the server does not know it (404)."""
        try:
            return await self._json("GET", f"/files/{file_id}", f"file {file_id}")
        except BatchAPIError as e:
            if e.status == 404:
                return None
            raise

    async def wait_file(self, file_id: str, timeout: float, interval: float = 1.0, mode: FileStatus = "poll",
                        uploaded: dict[str, Any] | None = None) -> dict[str, Any]:
        """Wait until an upload is usable for a batch, as ``mode`` says (``uploaded``: the upload's reply).

        ``poll``: ask ``GET /files/{id}`` until the file is ready, a 404 meaning
        not visible yet; ``optional``: the same, except that a first 404 means the
        route is missing; ``absent``: never ask. Without the call, the upload's
        reply is trusted (unless it says the file failed).
        """
        info = uploaded or {"id": file_id}
        if mode == "absent":
            return self._ready(file_id, info) or info
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        first = True
        while True:
            got = await self.get_file(file_id)
            if got is None and first and mode == "optional":
                return self._ready(file_id, info) or info
            first = False
            if got is not None and (ready := self._ready(file_id, got)) is not None:
                return ready
            if loop.time() >= deadline:
                seen = f"status {got.get('status')}" if got is not None else "not found"
                raise LiveroomError(f"file {file_id} is still not ready after {timeout:g} s ({seen}); "
                                    "run submit again later")
            await asyncio.sleep(interval)

    @staticmethod
    def _ready(file_id: str, info: dict[str, Any]) -> dict[str, Any] | None:
        """``info`` when the file it describes is usable, None while it is not yet; FileFailed when it failed."""
        status = info.get("status")
        if status in FILE_FAILED:
            detail = info.get("status_details") or info.get("error") or ""
            raise FileFailed(f"file {file_id}: status {status}" + (f": {detail}" if detail else ""))
        return info if status in FILE_READY or status is None else None

    async def download(self, file_id: str, dest: Path) -> int:
        """``GET /files/{id}/content`` into ``dest`` (atomically); the bytes written."""
        dest = Path(dest)
        tmp = dest.with_name(dest.name + ".part")

        async def call() -> int:
            assert self._session is not None
            what = f"download {file_id}"
            self.calls += 1
            with transport_errors(what, self._key):
                async with self._session.get(f"{self.base}/files/{file_id}/content",
                                             timeout=self._upload_timeout) as resp:
                    if resp.status != 200:
                        self._check(resp.status, resp.headers, await resp.read(), what)
                    n = 0
                    with open(tmp, "wb") as f:
                        async for block in resp.content.iter_chunked(1 << 16):
                            f.write(block)
                            n += len(block)
                        f.flush()
                        os.fsync(f.fileno())
            _mask_secrets(tmp, self.target.secrets)
            os.replace(tmp, dest)
            return n

        try:
            return await self._retrying(call)
        finally:
            tmp.unlink(missing_ok=True)

    # -- batches ---------------------------------------------------------------------
    async def create_batch(self, input_file_id: str, endpoint: str, completion_window: str | None = "24h",
                           metadata: dict[str, str] | None = None,
                           auto_delete_input_file: bool | None = None) -> dict[str, Any]:
        """``POST /batches``; ``completion_window`` and ``auto_delete_input_file`` are left out when None."""
        body: dict[str, Any] = {"input_file_id": input_file_id, "endpoint": endpoint}
        if completion_window is not None:
            body["completion_window"] = completion_window
        if auto_delete_input_file is not None:
            body["auto_delete_input_file"] = auto_delete_input_file
        if metadata:
            body["metadata"] = metadata
        obj = await self._json("POST", "/batches", f"create batch for {input_file_id}", json=body)
        if not isinstance(obj.get("id"), str):
            raise BatchAPIError(f"create batch for {input_file_id}: the response has no batch id")
        return obj

    async def get_batch(self, batch_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/batches/{batch_id}", f"batch {batch_id}")

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return await self._json("POST", f"/batches/{batch_id}/cancel", f"cancel batch {batch_id}")

    async def list_batches(self, limit: int = 100, after: str | None = None) -> dict[str, Any]:
        """One page of ``GET /batches`` (newest first): ``data``, ``has_more``, ``last_id``."""
        query = f"?limit={limit}" + (f"&after={quote(after, safe='')}" if after else "")
        return await self._json("GET", "/batches" + query, "list batches")

    async def find_batch(self, input_file_id: str, limit: int = 100, max_pages: int = 20) -> dict[str, Any] | None:
        """A batch already made from ``input_file_id`` (``GET /batches``, paged), if the server lists it.

        Guards the window where a create succeeded but its answer was lost; the
        batch is recent, so at most ``max_pages`` pages are read (newest first).
        Pages follow ``after`` = the page's ``last_id``, else its last batch's id
        (OAI-SDK ``pagination.py``, ZAI-SDK ``src/zai/core/pagination.py``).
        Servers without the list route are taken as knowing none.
        """
        after: str | None = None
        for _ in range(max_pages):
            try:
                page = await self.list_batches(limit, after)
            except BatchAPIError:
                return None
            data = [b for b in page.get("data") or () if isinstance(b, dict)]
            for b in data:
                if b.get("input_file_id") == input_file_id and isinstance(b.get("id"), str):
                    return b
            cursor = page.get("last_id") or (data[-1].get("id") if data else None)
            if not page.get("has_more") or not isinstance(cursor, str) or cursor == after:
                return None
            after = cursor
        return None
