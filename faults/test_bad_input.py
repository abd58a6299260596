"""Scenario 7: bad input at volume. Schemathesis generates requests to every operation of
openapi.yaml, valid and invalid ones, against the API under uvicorn: no answer is a 5xx, and
every answer is one the schema describes (status code, content type, body)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from faults.harness import Servers, fault_stack
from tests.stack import Stack

OPENAPI = Path(__file__).resolve().parents[1] / "openapi.yaml"
EXAMPLES_PER_OPERATION = 25

schema = schemathesis.openapi.from_path(OPENAPI)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=EXAMPLES_PER_OPERATION,
    deterministic=True,
    database="none",
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # No worker: what the API accepts only waits in PostgreSQL; the API is what is fuzzed.
    log_dir = tmp_path_factory.mktemp("bad-input-logs")
    with fault_stack(servers, log_dir, name="faults_bad_input", workers=0) as running:
        yield running


@schema.parametrize()
def test_no_input_gets_a_5xx_or_an_answer_outside_the_schema(
    case: schemathesis.Case[Any], stack: Stack
) -> None:
    headers = {"Authorization": f"Bearer {stack.extra_env['FAULTS_KEY']}"}
    case.call_and_validate(base_url=stack.api, headers=headers, checks=CHECKS)
