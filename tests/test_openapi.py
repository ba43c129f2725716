"""The OpenAPI document describes exactly what the API does: schemathesis generates requests
for every operation of the served document (valid ones and invalid ones) and sends them to a
real `jobstream api` process on the real broker and Redis."""

from __future__ import annotations

from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# A 5xx, or an answer the document does not describe (status, content type, headers, body).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 15  # per operation and mode: 12 operations x 2 modes x 15 requests
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same requests on every run: a failure reproduces
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time; the failure is shown as found
    suppress_health_check=list(HealthCheck),
)


def test_document_describes_bodies_errors_and_metrics(api_url: str) -> None:
    """The submit and replay operations document their JSON bodies; errors have the API's
    shape (no FastAPI validation shape); /metrics is text."""
    doc = httpx.get(f"{api_url}/openapi.json").json()
    paths = doc["paths"]
    for path in ("/jobs", "/jobs/batch", "/dlq/replay"):
        assert "application/json" in paths[path]["post"]["requestBody"]["content"], path
    submit = paths["/jobs"]["post"]["responses"]
    assert {"200", "202", "400", "409", "413", "415", "422", "503"} <= submit.keys()
    assert submit["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "Retry-After" in submit["503"]["headers"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]


def test_every_operation_answers_as_documented(api_url: str) -> None:
    """Generated requests for every operation, valid and invalid, get no 5xx and only answers
    the document describes; valid ones reach the real routes."""
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document itself is valid
        operations.append(result.ok())
    assert len(operations) == 22
    failures: list[str] = []
    seen: dict[str, set[int]] = {}  # statuses each operation answered
    with requests.Session() as session:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    fuzz(operation, mode, api_url, session, seen.setdefault(operation.label, set()))
                except Unsatisfiable:  # no invalid request exists (no constrained input): nothing to send
                    assert mode is GenerationMode.NEGATIVE
                except Exception as exc:  # every operation is fuzzed; all failures are reported
                    failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
    for label in ("POST /jobs", "POST /jobs/batch", "POST /dlq/replay", "GET /dlq"):
        assert any(200 <= s < 300 for s in seen[label]), (label, seen[label])


def fuzz(operation: Any, mode: GenerationMode, url: str, session: requests.Session, seen: set[int]) -> None:
    """Send `EXAMPLES` generated requests for `operation`; raise on the first failed check."""

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: Any) -> None:
        response = case.call_and_validate(base_url=url, session=session, checks=CHECKS, timeout=10)
        seen.add(response.status_code)

    call()
