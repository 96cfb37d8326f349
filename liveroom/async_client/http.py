"""The old home of the chat client and its errors, kept so older import paths work.

The errors live in :mod:`.errors`, the HTTP layer in :mod:`.transport`, the
chat client in :mod:`.chat`; import from there.
"""

from __future__ import annotations

from .chat import ChatClient
from .errors import CallError, Fatal, GarbledBody, Rejected, Retryable
from .transport import Reply, endpoint_host, error_info, http_error, redact, retry_after

__all__ = ["CallError", "ChatClient", "Fatal", "GarbledBody", "Rejected", "Reply", "Retryable", "endpoint_host",
           "error_info", "http_error", "redact", "retry_after"]
