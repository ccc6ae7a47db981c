"""Properties over random valid configs: the document validates, tells the truth, leaks nothing."""

from __future__ import annotations

import json

from discovery_strategies import configs
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate

from mpp_proxy.config.model import ANY_METHOD, Config
from mpp_proxy.discovery import llms_txt, openapi_document
from mpp_proxy.discovery.templates import place_routes
from mpp_proxy.router import Match, Router

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)


@SETTINGS
@given(configs())
def test_every_generated_document_is_valid_openapi(generated: tuple[Config, list[str]]) -> None:
    config, _ = generated
    document = openapi_document(config)
    validate(document)
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


@SETTINGS
@given(configs())
def test_no_secret_ever_appears_in_either_document(generated: tuple[Config, list[str]]) -> None:
    config, secrets = generated
    published = json.dumps(openapi_document(config)) + llms_txt(config)
    published = published.lower()
    for value in secrets:
        assert value.lower() not in published


@SETTINGS
@given(configs())
def test_each_documented_operation_is_answered_by_its_route(
    generated: tuple[Config, list[str]],
) -> None:
    # Fill every template with values no static segment can equal (statics are lower case) and
    # ask the real router which route answers: it must be the one the document describes. A tail
    # spans one or more segments and a deeper route may take some lengths: one length must reach.
    config, _ = generated
    router = Router.compile(config.services)
    for service in config.services:
        for placement in place_routes(service):
            answered = []
            for tail in ("V", "V/W", "V/W/X", "V/W/X/Y"):
                path = placement.template
                for segment in placement.parameters:
                    value = tail if segment.kind == "tail" else "V"
                    path = path.replace("{" + segment.text + "}", value, 1)
                path = path.replace("%7B", "{").replace("%7D", "}")
                result = router.match(placement.method.upper(), path)
                assert isinstance(result, Match), (placement, path, result)
                assert result.service.id == service.id
                answered.append(result.route)
            assert placement.route in answered, (placement, answered)


@SETTINGS
@given(configs())
def test_every_explicit_method_route_is_documented(generated: tuple[Config, list[str]]) -> None:
    # (A "*" route is left out only for methods other routes take; all of them is possible.)
    config, _ = generated
    for service in config.services:
        placed = {id(p.route) for p in place_routes(service)}
        assert all(id(r) in placed for r in service.routes if r.method != ANY_METHOD)
