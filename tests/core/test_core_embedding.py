"""HTTPS upstreams (certificate verification) and the proxy embedded in another ASGI app."""

from __future__ import annotations

import gc
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from core_harness import Served, config, service
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from mpp_proxy.config.model import ProxySettings
from mpp_proxy.core import Proxy
from tests.support.upstream import Upstream


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_upstream(ca: trustme.CA) -> Iterator[Upstream]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    with Upstream(tls=ctx) as up:
        yield up


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def test_https_upstream_verified_with_the_service_ca_bundle(
    tls_upstream: Upstream, ca_file: str
) -> None:
    app = Proxy(config(service("tls", tls_upstream.url, ca_bundle=ca_file)))
    with Served(app) as s, httpx.Client(base_url=s.url) as c:
        for _ in range(3):
            r = c.get("/tls/echo/secure")
            assert r.status_code == 200
            assert r.json()["path"] == "/echo/secure"
        assert r.json()["headers"][0] == ["host", f"127.0.0.1:{tls_upstream.port}"]
        assert app.pool("tls").opened == 1


def test_https_upstream_with_an_unknown_ca_is_rejected(tls_upstream: Upstream) -> None:
    # Default trust store (certifi) does not know the test CA.
    app = Proxy(config(service("tls", tls_upstream.url)))
    before = tls_upstream.requests
    with Served(app) as s, httpx.Client(base_url=s.url) as c:
        r = c.get("/tls/echo/secure")
        assert r.status_code == 502
        assert r.headers["content-type"] == "application/problem+json"
        assert "TLS verification failed" in r.json()["detail"]
    assert tls_upstream.requests == before  # nothing was sent over the unverified channel


def test_https_upstream_with_a_wrong_hostname_is_rejected(
    tls_upstream: Upstream, ca_file: str, ca: trustme.CA
) -> None:
    other = Upstream(tls=_ctx_for(ca, "other.example")).start()
    try:
        app = Proxy(config(service("tls", other.url, ca_bundle=ca_file)))
        with Served(app) as s, httpx.Client(base_url=s.url) as c:
            assert c.get("/tls/echo").status_code == 502
    finally:
        other.stop()


def _ctx_for(ca: trustme.CA, name: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(ctx)
    return ctx


# ---------------------------------------------------------------------------- embedding


def test_mounted_under_a_prefix_in_starlette(upstream: Upstream) -> None:
    proxy = Proxy(config(service("up", upstream.url)))

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("host app")

    app = Starlette(routes=[Route("/hello", hello), Mount("/gw", app=proxy)])
    # Starlette does not forward lifespan to mounted apps: the proxy initialises lazily.
    with Served(app) as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/hello").text == "host app"
        r = c.post("/gw/up/echo/a%2Cb?x=1", content=b"body")
        assert r.status_code == 200
        assert r.json()["path"] == "/echo/a%2Cb"
        assert r.json()["query"] == "x=1"
        assert r.json()["body"] == "body"
        assert c.get("/gw/healthz").status_code == 200
        assert c.get("/gw/readyz").status_code == 200
        assert c.get("/gw/openapi.json").json()["openapi"].startswith("3.1")
        r = c.get("/gw/nope/x")
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"
        assert proxy.store is not None


def test_proxy_built_from_keyword_settings(upstream: Upstream) -> None:
    from mpp_proxy.config.model import Route as ConfigRoute
    from mpp_proxy.config.model import Service

    svc = Service(id="up", base_url=upstream.url, routes=(ConfigRoute("GET", "/echo/*"),))
    app = Proxy(state="memory://", services=[svc])
    assert app.config.services[0].id == "up"
    with Served(app) as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/up/echo/kw").json()["path"] == "/echo/kw"
        assert c.post("/up/echo/kw").status_code == 405


def test_constructing_does_no_io(tmp_path: Path, upstream: Upstream) -> None:
    db = tmp_path / "state.db"
    cfg = config(service("up", upstream.url, ca_bundle=str(tmp_path / "missing-ca.pem")))
    cfg = type(cfg)(proxy=ProxySettings(state=f"sqlite:///{db}"), services=cfg.services)
    Proxy(cfg)
    assert not db.exists()


def test_lifespan_opens_and_closes_the_store(tmp_path: Path, upstream: Upstream) -> None:
    db = tmp_path / "state.db"
    cfg = config(service("up", upstream.url))
    cfg = type(cfg)(proxy=ProxySettings(state=f"sqlite:///{db}"), services=cfg.services)
    app = Proxy(cfg)
    with Served(app, lifespan="on") as s, httpx.Client(base_url=s.url) as c:
        assert db.exists()  # opened at startup, before any request
        assert c.get("/readyz").status_code == 200


def test_lifespan_startup_freezes_the_loaded_heap(upstream: Upstream) -> None:
    # Owning the process (lifespan), the proxy keeps full GC passes off what startup loaded.
    app = Proxy(config(service("up", upstream.url)))
    with Served(app, lifespan="on") as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] >= 10_000


def test_a_given_store_is_used_and_opened_at_startup(upstream: Upstream) -> None:
    from mpp_proxy.state import open_store

    store = open_store("memory://")
    app = Proxy(config(service("up", upstream.url)), store=store)
    assert app.store is store
    with Served(app) as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/readyz").status_code == 200


def test_config_and_keyword_settings_together_are_refused(upstream: Upstream) -> None:
    with pytest.raises(TypeError):
        Proxy(config(service("up", upstream.url)), realm="x")
