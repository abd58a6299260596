"""Twilio's OpenAPI description, loaded once, to hold requests and answers to.

A copy of ../shared/twilio/twilio_api_v2010.json (tests/contracts/PROVENANCE.txt), kept in the
repository so that a clone anywhere runs the contract tests; its digest holds it to that file."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest

SPEC_FILE = Path(__file__).resolve().parent / "contracts" / "twilio_api_v2010.json"
SPEC_SHA256 = "99cae87a6bb1725f71363364cbd30282a13140374b2d5f9bdd5bdfa5d4c8a6d7"  # PROVENANCE.txt
MESSAGES = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
MESSAGE = "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json"


@cache
def twilio_spec() -> dict[str, Any]:
    raw = SPEC_FILE.read_bytes()
    if hashlib.sha256(raw).hexdigest() != SPEC_SHA256:
        raise AssertionError(f"{SPEC_FILE} is not the description PROVENANCE.txt names")
    loaded: dict[str, Any] = json.loads(raw)
    return loaded


@cache
def twilio_openapi() -> OpenAPI:
    return OpenAPI.from_dict(twilio_spec())


def example(path: str, method: str, status: str, name: str) -> dict[str, Any]:
    """One of the answers the description gives as an example."""
    content = twilio_spec()["paths"][path][method]["responses"][status]["content"]
    value: dict[str, Any] = content["application/json"]["examples"][name]["value"]
    return value


def openapi_request(request: httpx.Request) -> MockRequest:
    """An httpx request as openapi-core reads one, addressed to api.twilio.com."""
    return MockRequest(
        "https://api.twilio.com",
        request.method.lower(),
        request.url.path,
        args=dict(request.url.params.multi_items()),
        headers=dict(request.headers),
        data=request.content or None,
        content_type=request.headers.get("content-type", "application/json"),
    )
