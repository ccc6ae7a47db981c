"""The proxy serves both documents from memory: content types, cache header, HEAD, and the truth."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

import mpp_proxy
from mpp_proxy.config.model import Config
from mpp_proxy.discovery import llms_txt, openapi_document
from tests.support.served import Served

DOCUMENTS = [
    ("/openapi.json", "application/json"),
    ("/llms.txt", "text/markdown; charset=utf-8"),
]


@pytest.mark.parametrize(("path", "content_type"), DOCUMENTS)
def test_get_serves_the_document_with_its_type_and_public_cache(
    served: Served, path: str, content_type: str
) -> None:
    response = httpx.get(served.url + path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["cache-control"] == "public, max-age=300"
    assert int(response.headers["content-length"]) == len(response.content)


@pytest.mark.parametrize(("path", "content_type"), DOCUMENTS)
def test_head_answers_like_get_without_a_body(served: Served, path: str, content_type: str) -> None:
    get = httpx.get(served.url + path)
    head = httpx.head(served.url + path)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == content_type
    assert head.headers["cache-control"] == "public, max-age=300"
    assert head.headers["content-length"] == get.headers["content-length"]


def test_served_documents_are_the_discovery_output(served: Served, config: Config) -> None:
    document = httpx.get(served.url + "/openapi.json").json()
    assert document == openapi_document(config, version=mpp_proxy.__version__)
    validate(document)
    assert httpx.get(served.url + "/llms.txt").text == llms_txt(config)


def _challenges(www_authenticate: list[str]) -> dict[str, dict[str, Any]]:
    """method -> decoded `request` of each Payment challenge."""
    out: dict[str, dict[str, Any]] = {}
    for header in www_authenticate:
        assert header.startswith("Payment ")
        params = dict(part.strip().split("=", 1) for part in header[len("Payment ") :].split(","))
        request = params["request"].strip('"')
        decoded = json.loads(base64.urlsafe_b64decode(request + "=" * (-len(request) % 4)))
        out[params["method"].strip('"')] = decoded
    return out


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("POST", "/api/echo/items", "/api/echo/items"),
        ("PUT", "/api/echo/items/7", "/api/echo/items/{id}"),
        ("GET", "/api/echo/files/a/b.txt", "/api/echo/files/{path}"),
        ("DELETE", "/api/echo/paid-any", "/api/echo/paid-any"),
    ],
)
def test_advertised_offers_match_the_402_challenges(
    served: Served, method: str, path: str, template: str
) -> None:
    # Discovery is advisory and the 402 authoritative: they must still say the same thing.
    document = httpx.get(served.url + "/openapi.json").json()
    offers = document["paths"][template][method.lower()]["x-payment-info"]["offers"]
    response = httpx.request(method, served.url + path)
    assert response.status_code == 402
    challenges = _challenges(response.headers.get_list("www-authenticate"))
    assert sorted(challenges) == sorted(o["method"] for o in offers)
    for offer in offers:
        request = challenges[offer["method"]]
        assert request["amount"] == offer["amount"]
        assert request["currency"].lower() == offer["currency"].lower()
