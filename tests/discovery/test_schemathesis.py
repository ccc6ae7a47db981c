"""Schemathesis fuzzes the running proxy against its own /openapi.json (upstream: the echo server).

Every operation: the proxy never answers 5xx (the upstream here never does, so a 5xx would be the
proxy's own). Paid operations: every status, content type and required header is one the document
declares; they carry no catch-all response, so this check has teeth.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    status_code_conformance,
)

from tests.support.served import Served

# Bounded: about 20 operations, the whole run takes a few seconds.
EXAMPLES_PER_OPERATION = 30
PAID_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
]


def fuzz(operation: Any, base_url: str, checks: list[Any]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, checks=checks, timeout=10)

    run()


def test_proxy_conforms_to_its_own_openapi_document(served: Served) -> None:
    schema = schemathesis.openapi.from_url(served.url + "/openapi.json")
    tested: dict[str, bool] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        paid = "x-payment-info" in operation.definition.raw
        fuzz(operation, served.url, PAID_CHECKS if paid else [not_a_server_error])
        tested[operation.label] = paid
    assert sum(tested.values()) >= 5, tested  # paid operations were really exercised
    assert len(tested) - sum(tested.values()) >= 5, tested
