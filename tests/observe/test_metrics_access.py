"""/metrics is not world-readable: loopback only by default, or a bearer token; anyone else
gets the 404 an unknown path gets. Labels never carry a client's path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from observe_harness import METRICS_TOKEN, samples, write_config

from mpp_proxy import Proxy, load_config
from tests.support.served import Served
from tests.support.upstream import Upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


def served(tmp_path: Path, upstream: Upstream, extra: str = "") -> Served:
    return Served(Proxy(load_config(str(write_config(tmp_path, upstream.url, extra)))))


def from_address(address: str) -> httpx.Client:
    """A client whose connections come from another loopback address."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def test_loopback_may_scrape_another_address_gets_404(tmp_path: Path, upstream: Upstream) -> None:
    with served(tmp_path, upstream) as s:
        with httpx.Client() as local:
            r = local.get(s.url + "/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "mpp_proxy_build_info" in r.text
        with from_address("127.0.0.2") as other:
            denied = other.get(s.url + "/metrics")
            unknown = other.get(s.url + "/no-such-path")
        assert denied.status_code == 404
        assert denied.json()["detail"] == unknown.json()["detail"]
        assert "mpp_proxy" not in denied.text


def test_a_bearer_token_opens_it_to_any_address(tmp_path: Path, upstream: Upstream) -> None:
    extra = f'[proxy.metrics]\nallow = []\nbearer_token = "{METRICS_TOKEN}"\n'
    with served(tmp_path, upstream, extra) as s, httpx.Client() as client:
        url = s.url + "/metrics"
        assert client.get(url).status_code == 404  # loopback is no longer enough
        wrong = {"Authorization": "Bearer not-the-token"}
        assert client.get(url, headers=wrong).status_code == 404
        basic = {"Authorization": f"Basic {METRICS_TOKEN}"}
        assert client.get(url, headers=basic).status_code == 404
        ok = client.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert ok.status_code == 200 and "mpp_proxy_requests_total" in ok.text


def test_an_allowed_network_and_a_custom_path(tmp_path: Path, upstream: Upstream) -> None:
    extra = '[proxy.metrics]\npath = "/internal/metrics"\nallow = ["127.0.0.2/32"]\n'
    with served(tmp_path, upstream, extra) as s:
        with from_address("127.0.0.2") as allowed:
            assert allowed.get(s.url + "/internal/metrics").status_code == 200
            assert allowed.get(s.url + "/metrics").status_code == 404
        with httpx.Client() as local:
            assert local.get(s.url + "/internal/metrics").status_code == 404


def test_metrics_can_be_switched_off(tmp_path: Path, upstream: Upstream) -> None:
    with served(tmp_path, upstream, "[proxy.metrics]\nenabled = false\n") as s:
        assert httpx.get(s.url + "/metrics").status_code == 404


def test_unmatched_paths_share_one_label_value(tmp_path: Path, upstream: Upstream) -> None:
    with served(tmp_path, upstream) as s, httpx.Client(base_url=s.url) as client:
        for path in ("/secret-path-1", "/svc/unknown/deep", "/svc/echo/free/../x"):
            client.get(path)
        client.get("/svc/echo/free")
        text = client.get("/metrics").text
    assert "secret-path" not in text and "unknown/deep" not in text
    got = samples(text)
    unmatched = [k for k in got if k.startswith("mpp_proxy_requests_total") and "(none)" in k]
    assert sum(got[k] for k in unmatched) == 3
