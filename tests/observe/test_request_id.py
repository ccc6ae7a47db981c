"""Request ids: kept when well-formed, replaced otherwise, generated when absent; sent
upstream, returned on every response and named as `instance` in problem bodies."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from observe_harness import pay, write_config

from mpp_proxy import Proxy, load_config
from tests.support.served import Served
from tests.support.upstream import Upstream

OURS = re.compile(r"[0-9a-f]{12}-[0-9a-f]+")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    with Upstream() as up:
        proxy = Proxy(load_config(str(write_config(tmp_path, up.url))))
        with Served(proxy) as served, httpx.Client(base_url=served.url, timeout=10) as c:
            yield c


def upstream_saw(r: httpx.Response) -> list[str]:
    return [v for k, v in r.json()["headers"] if k == "x-request-id"]


def test_a_well_formed_client_id_goes_upstream_and_comes_back(client: httpx.Client) -> None:
    rid = "Abc-123_x.y:z"
    r = client.get("/svc/echo/free", headers={"X-Request-Id": rid})
    assert r.headers["x-request-id"] == rid
    assert upstream_saw(r) == [rid]


@pytest.mark.parametrize(
    "bad", ["", "has space", "x" * 129, "semi;colon", 'quote"d', "ünï".encode().decode("latin-1")]
)
def test_a_malformed_client_id_is_replaced(client: httpx.Client, bad: str) -> None:
    r = client.get("/svc/echo/free", headers=[("x-request-id", bad.encode("latin-1"))])
    rid = r.headers["x-request-id"]
    assert rid != bad and OURS.fullmatch(rid)
    assert upstream_saw(r) == [rid]


def test_the_longest_allowed_id_is_kept(client: httpx.Client) -> None:
    rid = "a" * 128
    assert (
        client.get("/svc/echo/free", headers={"x-request-id": rid}).headers["x-request-id"] == rid
    )


def test_an_id_is_generated_and_each_request_gets_its_own(client: httpx.Client) -> None:
    one, two = (client.get("/svc/echo/free") for _ in range(2))
    ids = {one.headers["x-request-id"], two.headers["x-request-id"]}
    assert len(ids) == 2 and all(OURS.fullmatch(i) for i in ids)
    assert upstream_saw(one) == [one.headers["x-request-id"]]


@pytest.mark.parametrize(
    ("path", "status"),
    [("/svc/echo/paid", 402), ("/nowhere", 404), ("/svc/nothing-here", 404), ("/down/x", 502)],
)
def test_problems_carry_the_id_and_name_it_as_instance(
    client: httpx.Client, path: str, status: int
) -> None:
    r = client.get(path, headers={"x-request-id": "problem-1"})
    assert r.status_code == status
    assert r.headers["x-request-id"] == "problem-1"
    body = r.json()
    assert body["instance"] == "urn:mpp-proxy:request:problem-1"
    assert int(r.headers["content-length"]) == len(r.content)


def test_the_upstreams_own_id_is_passed_on_under_another_name(client: httpx.Client) -> None:
    r = client.get(
        "/svc/response-headers",
        params={"X-Request-Id": "upstream-9"},
        headers={"x-request-id": "ours-2"},
    )
    assert r.headers.get_list("x-request-id") == ["ours-2"]
    assert r.headers["x-upstream-request-id"] == "upstream-9"


def test_a_paid_response_carries_the_id_of_its_own_request(client: httpx.Client) -> None:
    r = pay(client, str(client.base_url) + "/svc/echo/paid", headers={"x-request-id": "paid-7"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "paid-7"
    assert upstream_saw(r) == ["paid-7"]
