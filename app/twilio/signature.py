"""X-Twilio-Signature: HMAC-SHA1 over the URL Twilio called and the sorted form parameters."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

_DEFAULT_PORTS = {"https": 443, "http": 80}


def compute_signature(
    auth_token: str, url: str, params: Mapping[str, str] | Iterable[tuple[str, str]]
) -> str:
    """The signature of a form POST: names in code-point order, each followed by its value;
    a repeated name contributes each of its distinct values, sorted (Twilio's validator
    de-duplicates them: `Digits=1234&Digits=1234` counts once)."""
    pairs = sorted(set(params.items() if isinstance(params, Mapping) else params))
    payload = url + "".join(name + value for name, value in pairs)
    digest = hmac.digest(auth_token.encode(), payload.encode(), hashlib.sha1)
    return base64.b64encode(digest).decode()


def validate_signature(
    auth_token: str,
    url: str,
    params: Mapping[str, str] | Iterable[tuple[str, str]],
    signature: str,
) -> bool:
    """Constant-time check; like Twilio's own validator, the URL counts with and without its
    default port."""
    pairs = list(params.items() if isinstance(params, Mapping) else params)
    expected = signature.encode()
    return any(
        hmac.compare_digest(compute_signature(auth_token, candidate, pairs).encode(), expected)
        for candidate in _with_and_without_default_port(url)
    )


# Few URLs are called (PUBLIC_BASE_URL and a route's path): each is split once, not per request.
@functools.lru_cache(maxsize=256)
def _with_and_without_default_port(url: str) -> tuple[str, ...]:
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    if default is None or parts.hostname is None:
        return (url,)
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    without = urlunsplit(parts._replace(netloc=prefix + host))
    with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}"))
    if parts.port is None:
        return (url, with_port)
    if parts.port == default:
        return (url, without)
    return (url,)
