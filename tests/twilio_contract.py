"""Twilio's OpenAPI description (../shared/twilio), loaded once, to hold requests and answers to."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest

SPEC_FILE = Path(__file__).resolve().parents[2] / "shared" / "twilio" / "twilio_api_v2010.json"
MESSAGES = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
MESSAGE = "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json"


@cache
def twilio_spec() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SPEC_FILE.read_text())
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
