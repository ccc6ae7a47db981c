"""The OpenAPI document: valid 3.1, one operation per route and method, prices as MPP offers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import jsonschema
import pytest
from discovery_samples import RECIPIENT, TEMPO_USDC, known_config
from openapi_spec_validator import validate

import mpp_proxy
from mpp_proxy.config.model import (
    Config,
    Price,
    ProxySettings,
    Route,
    Secret,
    Service,
    StripeMethod,
    TempoMethod,
)
from mpp_proxy.discovery import llms_txt, openapi_document

OPERATIONS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# draft-payment-discovery-01, appendix "JSON Schema for x-payment-info" (registries validate it).
X_PAYMENT_INFO_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"$ref": "#/$defs/offer"},
        {
            "type": "object",
            "required": ["offers"],
            "properties": {
                "offers": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/offer"}}
            },
            "additionalProperties": False,
        },
    ],
    "$defs": {
        "offer": {
            "type": "object",
            "required": ["intent", "method", "amount"],
            "properties": {
                "intent": {"type": "string", "enum": ["charge", "session"]},
                "method": {"type": "string"},
                "amount": {
                    "oneOf": [
                        {"type": "null"},
                        {"type": "string", "pattern": "^(0|[1-9][0-9]*)$"},
                    ]
                },
                "currency": {"type": "string"},
                "description": {"type": "string"},
                # With amount null (a price computed per request): the range it spans.
                "amountHint": {"type": "string"},
            },
            "additionalProperties": False,
        }
    },
}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in OPERATIONS
    ]


def one_service(*routes: Route, methods: tuple[Any, ...] = ()) -> Config:
    usdc = TempoMethod(name="usdc", recipient=RECIPIENT, currency=TEMPO_USDC)
    return Config(
        proxy=ProxySettings(secret_key=Secret("k" * 32)),
        methods=methods or (usdc,),
        services=(Service(id="svc", base_url="https://upstream.example", routes=routes),),
    )


def paid(amount: str, *methods: str) -> Price:
    return Price(Decimal(amount), methods or ("usdc",))


def test_known_config_document_is_valid_openapi_3_1() -> None:
    document = openapi_document(known_config())
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_info_names_the_proxy_and_its_version() -> None:
    info = openapi_document(known_config(), version=mpp_proxy.__version__)["info"]
    assert info["title"] == "Example AI Gateway"
    assert info["version"] == mpp_proxy.__version__
    assert info["description"].startswith("Pay-per-call access to OpenAI")
    assert "Authorization: Payment" in info["description"]


def test_service_info_has_categories_and_links_to_llms_txt() -> None:
    info = openapi_document(known_config())["x-service-info"]
    assert info == {
        "categories": ["ai", "data"],
        "docs": {"llms": "/llms.txt", "apiReference": "/openapi.json"},
    }


def test_base_url_becomes_servers_and_prefixes_doc_links() -> None:
    document = openapi_document(known_config(), base_url="https://api.example.com/pay/")
    assert document["servers"] == [{"url": "https://api.example.com/pay"}]
    assert document["x-service-info"]["docs"]["llms"] == "https://api.example.com/pay/llms.txt"
    validate(document)


def test_colon_param_becomes_a_declared_path_parameter() -> None:
    document = openapi_document(one_service(Route("GET", "/v1/forecast/:city/days/:n")))
    op = document["paths"]["/svc/v1/forecast/{city}/days/{n}"]["get"]
    assert [(p["name"], p["in"], p["required"]) for p in op["parameters"]] == [
        ("city", "path", True),
        ("n", "path", True),
    ]
    assert all("x-mpp-tail" not in p for p in op["parameters"])
    validate(document)


def test_tail_becomes_a_path_parameter_marked_x_mpp_tail() -> None:
    document = openapi_document(one_service(Route("GET", "/v1/files/*")))
    (param,) = document["paths"]["/svc/v1/files/{path}"]["get"]["parameters"]
    assert param["name"] == "path"
    assert param["x-mpp-tail"] is True
    assert "pattern" not in param["schema"]  # it may hold "/"
    validate(document)


def test_tail_name_never_collides_with_a_param_name() -> None:
    document = openapi_document(one_service(Route("GET", "/:path/*")))
    assert list(document["paths"]) == ["/svc/{path}/{path_2}"]
    validate(document)


def test_tail_sharing_a_place_with_a_param_moves_one_segment_down() -> None:
    # GET /a/x goes to the :id route, so the tail only answers two or more segments.
    document = openapi_document(one_service(Route("GET", "/a/:id"), Route("GET", "/a/*")))
    assert set(document["paths"]) == {"/svc/a/{id}", "/svc/a/{segment}/{path}"}
    tail = document["paths"]["/svc/a/{segment}/{path}"]["get"]["parameters"]
    assert [p.get("x-mpp-tail", False) for p in tail] == [False, True]
    validate(document)


def test_routes_differing_only_in_param_names_share_one_path_item() -> None:
    document = openapi_document(one_service(Route("GET", "/a/:x"), Route("POST", "/a/:y")))
    assert list(document["paths"]) == ["/svc/a/{x}"]
    assert set(document["paths"]["/svc/a/{x}"]) == {"get", "post"}
    assert document["paths"]["/svc/a/{x}"]["post"]["parameters"][0]["name"] == "x"
    validate(document)


def test_any_method_route_documents_every_common_method() -> None:
    document = openapi_document(one_service(Route("*", "/echo")))
    assert set(document["paths"]["/svc/echo"]) == {
        "get",
        "put",
        "post",
        "delete",
        "options",
        "head",
        "patch",
    }
    validate(document)


def test_explicit_method_beats_any_method_route() -> None:
    document = openapi_document(one_service(Route("*", "/echo", paid("1")), Route("GET", "/echo")))
    item = document["paths"]["/svc/echo"]
    assert "x-payment-info" not in item["get"]
    assert "x-payment-info" in item["post"]


def test_head_follows_an_explicit_get_before_an_any_method_route() -> None:
    document = openapi_document(
        one_service(Route("*", "/echo", paid("1")), Route("GET", "/echo"), Route("*", "/other"))
    )
    assert "head" not in document["paths"]["/svc/echo"]  # HEAD /svc/echo is the free GET
    assert "head" in document["paths"]["/svc/other"]


def test_operation_ids_are_unique() -> None:
    document = openapi_document(
        one_service(
            Route("GET", "/a-b"), Route("GET", "/a_b"), Route("GET", "/a.b"), Route("*", "/x")
        )
    )
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids)) == 10
    validate(document)


def test_free_operation_has_no_payment_info_and_passes_upstream_statuses() -> None:
    op = openapi_document(one_service(Route("GET", "/free")))["paths"]["/svc/free"]["get"]
    assert "x-payment-info" not in op
    assert "x-mpp-offers" not in op
    assert "402" not in op["responses"]
    assert op["responses"]["default"] == {"$ref": "#/components/responses/Upstream"}


def test_paid_operation_declares_402_with_challenge_header_and_problem_body() -> None:
    document = openapi_document(one_service(Route("POST", "/paid", paid("0.05"))))
    op = document["paths"]["/svc/paid"]["post"]
    assert op["responses"]["402"] == {"$ref": "#/components/responses/PaymentRequired"}
    required = document["components"]["responses"]["PaymentRequired"]
    assert required["headers"]["WWW-Authenticate"] == {
        "$ref": "#/components/headers/WWW-Authenticate"
    }
    assert document["components"]["headers"]["WWW-Authenticate"]["required"] is True
    assert "application/problem+json" in required["content"]
    # No catch-all: every status a paid route can answer is listed.
    assert "default" not in op["responses"]


def test_paid_operation_offers_each_method_in_base_units() -> None:
    card = StripeMethod(name="card", secret_key=Secret("sk_x"), network_id="net_1")
    usdc = TempoMethod(name="usdc", recipient=RECIPIENT, currency=TEMPO_USDC)
    config = one_service(
        Route("POST", "/chat", paid("0.05", "usdc", "card"), description="Chat"),
        methods=(usdc, card),
    )
    op = openapi_document(config)["paths"]["/svc/chat"]["post"]
    assert op["x-payment-info"] == {
        "offers": [
            {
                "intent": "charge",
                "method": "tempo",
                "amount": "50000",
                "currency": TEMPO_USDC,
                "description": "0.05 USDC (tempo)",
            },
            {
                "intent": "charge",
                "method": "stripe",
                "amount": "5",
                "currency": "usd",
                "description": "0.05 USD (stripe)",
            },
        ]
    }
    tempo, stripe = op["x-mpp-offers"]
    assert tempo["decimals"] == 6 and tempo["recipient"] == RECIPIENT and tempo["chainId"] == 4217
    assert stripe["decimals"] == 2 and stripe["networkId"] == "net_1"
    assert [o["price"] for o in op["x-mpp-offers"]] == ["0.05", "0.05"]


@pytest.mark.parametrize(
    ("deliver_below", "delivered"), [(400, ["2XX", "3XX"]), (500, ["2XX", "3XX", "4XX"])]
)
def test_paid_operation_says_which_upstream_statuses_deliver_and_which_credit(
    deliver_below: int, delivered: list[str]
) -> None:
    route = Route("GET", "/p", paid("1"), deliver_below=deliver_below)
    responses = openapi_document(one_service(route))["paths"]["/svc/p"]["get"]["responses"]
    ranges = {k: v["$ref"].rsplit("/", 1)[1] for k, v in responses.items() if k.endswith("XX")}
    assert sorted(k for k, v in ranges.items() if v == "Delivered") == delivered
    assert sorted(k for k, v in ranges.items() if v == "Credited") == [
        k for k in ("2XX", "3XX", "4XX", "5XX") if k not in delivered
    ]


def test_every_payment_info_validates_against_the_discovery_draft_schema() -> None:
    document = openapi_document(known_config())
    paid_ops = [op for _, _, op in operations(document) if "x-payment-info" in op]
    assert len(paid_ops) > 5
    for op in paid_ops:
        jsonschema.validate(op["x-payment-info"], X_PAYMENT_INFO_SCHEMA)
        assert len(op["x-mpp-offers"]) == len(op["x-payment-info"]["offers"])
        assert "402" in op["responses"]


def test_a_price_read_from_the_request_shows_its_range_and_table() -> None:
    document = openapi_document(known_config())
    validate(document)
    op = document["paths"]["/openai/v1/responses"]["post"]
    usdc, card = op["x-payment-info"]["offers"]
    assert (usdc["amount"], usdc["amountHint"]) == (None, "10000-50000")
    assert (card["amount"], card["amountHint"]) == (None, "1-5")
    details = op["x-mpp-offers"][0]
    assert details["amount"] is None and details["pricing"] == {
        "from": "json:model",
        "minPrice": "0.01",
        "maxPrice": "0.05",
        "table": {"gpt-4o": "0.05", "gpt-4o-mini": "0.01"},
        "default": "0.02",
    }
    assert "read from the JSON body's `model`" in op["description"]
    text = llms_txt(known_config())
    assert "`POST /openai/v1/responses`: 0.01 to 0.05 USDC (tempo)" in text
    assert "`gpt-4o`: 0.05; `gpt-4o-mini`: 0.01; any other: 0.02" in text


def test_static_braces_cannot_turn_into_a_template() -> None:
    document = openapi_document(one_service(Route("GET", "/a{b}")))
    assert list(document["paths"]) == ["/svc/a%7Bb%7D"]
    validate(document)


def test_document_with_no_services_is_valid() -> None:
    document = openapi_document(Config(proxy=ProxySettings()))
    assert document["paths"] == {}
    validate(document)
