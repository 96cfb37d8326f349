"""The flags of every command that drives the chat engine (bin/score, bin/serve), declared once.

:func:`add_model_arguments` says where the questions go and what they are
sent with; :func:`add_engine_arguments` how hard the engine pushes and whose
error codes it reads first. :func:`chat_settings` turns the parsed flags into
the :class:`ChatSettings` a command runs the engine with, the same way for
every command. A bad value is argparse's one line naming the flag.

``--endpoints FILE`` (or a repeated ``--base-url``) gives several endpoints of the
model (:mod:`.endpoints`); without it the one endpoint of ``--base-url`` is a pool
of one, unnamed, as it always was.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, replace
from typing import Any

from ..async_client.engine import EngineConfig
from ..async_client.providers import (
    CHAT_PROVIDERS,
    DEFAULT_BASE_URL,
    LLAMACPP,
    VLLM,
    Provider,
    add_provider_argument,
    default_base_url,
    resolve_provider,
)
from ..cliargs import (
    BASE_URL_ENV,
    Endpoint,
    add_base_url_argument,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    resolve_endpoint,
)
from ..errors import InputError
from .endpoints import EndpointSpec, from_base_urls, read_endpoints
from .plan import DEFAULT_MODEL, RESPONSE_FORMATS, ModelParams, extra_body

LOCAL_SERVERS = (VLLM.name, LLAMACPP.name)  # no address of their own: the user names it


@dataclass(frozen=True)
class ChatSettings:
    """Where questions go, what they are sent with and how hard the engine may push."""

    base_url: str
    api_key: str | None = field(repr=False)
    params: ModelParams = ModelParams()
    engine: EngineConfig = field(default_factory=EngineConfig)
    rpm: float | None = None
    tpm: float | None = None
    timeout: float = 120.0
    provider: Provider | None = None  # whose error codes are read first; None: any provider's
    endpoints: tuple[EndpointSpec, ...] = ()  # where requests go; () : base_url alone, unnamed

    @property
    def pool(self) -> tuple[EndpointSpec, ...]:
        """The endpoints to send to: those declared, else ``base_url`` alone (unnamed, as it always was)."""
        return self.endpoints or (EndpointSpec("", self.base_url, self.api_key, self.provider, None,
                                               self.rpm, self.tpm),)

    @property
    def manifest_url(self) -> str | None:
        """The endpoint the run manifest names: None for declared endpoints (a run resumes on another set)."""
        return None if self.endpoints else self.base_url


class _BaseUrls(argparse.Action):
    """``--base-url``: the last one given (as always), and every one given in ``base_urls``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.base_urls = [*(getattr(namespace, "base_urls", None) or []), values]


def json_object(text: str) -> dict[str, Any]:
    """``--extra-body``'s type: :func:`~.plan.extra_body`, its complaint as argparse's."""
    try:
        return extra_body(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--extra-body ")) from None


def add_model_arguments(p: argparse.ArgumentParser, flag: str = "--model") -> None:
    """``--base-url`` and what every question is sent with; ``flag`` names the chat model's flag."""
    add_base_url_argument(p, f"${BASE_URL_ENV}, else the --provider's, else {DEFAULT_BASE_URL}; given "
                             "more than once: every one an endpoint of the same model, with $OPENAI_API_KEY",
                          action=_BaseUrls)
    p.add_argument(flag, default=os.environ.get("LIVEROOM_MODEL", DEFAULT_MODEL), metavar="NAME",
                   help="chat model asked (default: $LIVEROOM_MODEL or %(default)s)")
    p.add_argument("--response-format", choices=RESPONSE_FORMATS, default="json_object",
                   help="response_format sent to the server (default: %(default)s)")
    p.add_argument("--temperature", type=non_negative_float, default=0.2, help="(default: %(default)s)")
    p.add_argument("--max-tokens", type=positive_int, default=1000, help="(default: %(default)s)")
    p.add_argument("--extra-body", metavar="JSON", type=json_object, default={},
                   help="provider fields merged into every request body and kept in the manifest, e.g. "
                        "'{\"enable_thinking\": false}' (DashScope), '{\"thinking\": {\"type\": \"disabled\"}}' (GLM)")


def add_engine_arguments(p: argparse.ArgumentParser, over: str = "", limit: str = "the live limit") -> None:
    """The engine's flags; ``over`` says what the limits count over, ``limit`` which live limit moves."""
    p.add_argument("--concurrency", type=positive_int, default=EngineConfig.concurrency,
                   help=f"the most requests in flight{over}: {limit} moves between 1 and this, lowered when "
                        "the provider says it is over its cap, raised while replies come back clean "
                        "(default: %(default)s)")
    p.add_argument("--fixed-concurrency", action="store_true",
                   help=f"keep {limit} at --concurrency whatever the provider answers")
    add_provider_argument(p, known=CHAT_PROVIDERS, what="whose error codes are read first")
    p.add_argument("--endpoints", metavar="FILE",
                   help="several endpoints of the model (TOML, one [[endpoint]] table each: name, base_url, key_env, "
                        "optional provider, max_concurrency, rpm, tpm); each job goes to one with room under its "
                        "own live limit, a fatal answer retires only its endpoint (README: Several endpoints)")
    p.add_argument("--rpm", type=positive_float, help=f"requests per minute limit{over}, spread evenly")
    p.add_argument("--tpm", type=positive_float, help=f"tokens per minute limit{over} (estimated, corrected by usage)")
    p.add_argument("--max-retries", type=non_negative_int, default=EngineConfig.max_retries,
                   help="transport retries per request (default: %(default)s)")
    p.add_argument("--max-reasks", type=non_negative_int, default=EngineConfig.max_reasks,
                   help="re-asks after an unusable reply (default: %(default)s)")
    p.add_argument("--reask-max-tokens", type=positive_int, default=None, metavar="N",
                   help="max_tokens of a re-ask (e.g. more room for a reasoning model that spent "
                        "--max-tokens thinking; default: --max-tokens)")
    p.add_argument("--timeout", type=positive_float, default=ChatSettings.timeout,
                   help="seconds per HTTP request (default: %(default)s)")
    p.add_argument("--backoff", type=positive_float, default=EngineConfig.backoff_initial,
                   help="first retry wait in seconds, doubling up to 60 (default: %(default)s)")


def chat_settings(args: argparse.Namespace, model: str, **engine: Any) -> ChatSettings:
    """What the flags of both adders ask for; ``model`` is the chat model's flag, ``engine`` a
    command's own :class:`EngineConfig` fields. A local server's provider needs its address."""
    if args.provider in LOCAL_SERVERS and not (args.base_url or os.environ.get(BASE_URL_ENV)):
        raise InputError(f"--provider {args.provider}: name the server with --base-url or {BASE_URL_ENV}")
    endpoint = resolve_endpoint(args.base_url, default_base_url(args.provider))
    config = EngineConfig(concurrency=args.concurrency, max_retries=args.max_retries, max_reasks=args.max_reasks,
                          backoff_initial=args.backoff, adaptive=not args.fixed_concurrency,
                          reask_max_tokens=args.reask_max_tokens, **engine)
    pool = _declared(args, endpoint.api_key)
    if pool:
        endpoint = Endpoint(pool[0].base_url, pool[0].api_key)
    return ChatSettings(endpoint.base_url, endpoint.api_key,
                        ModelParams(model, args.temperature, args.max_tokens, args.response_format, args.extra_body),
                        config, args.rpm, args.tpm, args.timeout,
                        resolve_provider(args.provider, endpoint.base_url, CHAT_PROVIDERS), pool)


def _declared(args: argparse.Namespace, api_key: str | None) -> tuple[EndpointSpec, ...]:
    """``--endpoints`` or a repeated ``--base-url``, each with ``--rpm`` / ``--tpm`` unless it says; () else."""
    urls = getattr(args, "base_urls", None) or []
    if args.endpoints and urls:
        raise InputError("--endpoints and --base-url: give one or the other (the file names every base URL)")
    if args.endpoints:
        specs = read_endpoints(args.endpoints, args.provider)
    elif len(urls) > 1:
        specs = from_base_urls(urls, api_key, args.provider)
    else:
        return ()
    return tuple(replace(s, rpm=s.rpm or args.rpm, tpm=s.tpm or args.tpm) for s in specs)
