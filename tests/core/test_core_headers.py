"""DESIGN 6 header rules, group by group, end to end through a served proxy to the echo upstream."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from core_harness import Served, config, service
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpp_proxy.config.auth import basic, bearer, header
from mpp_proxy.core import Proxy
from mpp_proxy.core.headers import REQUEST_STRIP, RequestHeaderRules, ResponseHeaderRules
from tests.support.upstream import Upstream

UPSTREAM_KEY = "sk-upstream-secret"


@pytest.fixture(scope="module")
def headers_proxy(upstream: Upstream) -> Iterator[Served]:
    app = Proxy(
        config(
            service("bearer", upstream.url, auth=bearer(UPSTREAM_KEY)),
            service("keyed", upstream.url, auth=header("X-Api-Key", UPSTREAM_KEY)),
            service("basic", upstream.url, auth=basic("user", "pw")),
            service(
                "tenant",
                upstream.url,
                auth=bearer(UPSTREAM_KEY),
                strip_headers=("OpenAI-Organization", "openai-project", "X-Api-Key"),
            ),
            service("fwd", upstream.url, forward_client_ip=True),
            service("plain", upstream.url),
            service("cookies", upstream.url, strip_response_headers=("set-cookie", "x-internal")),
        )
    )
    with Served(app) as served:
        yield served


@pytest.fixture(scope="module")
def client(headers_proxy: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=headers_proxy.url, timeout=10) as c:
        yield c


def seen(client: httpx.Client, path: str, headers: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Headers as the upstream received them: name -> values."""
    r = client.get(path, headers=headers)
    assert r.status_code == 200, r.text
    out: dict[str, list[str]] = {}
    for name, value in r.json()["headers"]:
        out.setdefault(name, []).append(value)
    return out


def test_hop_by_hop_headers_and_those_named_in_connection_are_dropped(
    client: httpx.Client,
) -> None:
    got = seen(
        client,
        "/plain/echo",
        [
            ("Connection", "keep-alive, X-Hop-Custom"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Upgrade", "websocket"),
            ("Proxy-Authorization", "Basic abc"),
            ("Proxy-Authenticate", "Basic"),
            ("X-Hop-Custom", "must go"),
            ("X-Kept", "stays"),
        ],
    )
    for name in (
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "x-hop-custom",
    ):
        assert name not in got
    assert got["x-kept"] == ["stays"]
    # Our own client connection header is about our hop only (h11 adds none for keep-alive).
    assert "connection" not in got


def test_host_is_the_upstreams(client: httpx.Client, upstream: Upstream) -> None:
    got = seen(client, "/plain/echo", [("Host", "evil.example")])
    assert got["host"] == [f"127.0.0.1:{upstream.port}"]


def test_client_credentials_never_reach_the_upstream(client: httpx.Client) -> None:
    got = seen(
        client,
        "/plain/echo",
        [("Authorization", "Bearer client-token"), ("Cookie", "session=abc")],
    )
    assert "authorization" not in got
    assert "cookie" not in got


def test_payment_headers_are_dropped(client: httpx.Client) -> None:
    got = seen(
        client,
        "/plain/echo",
        [
            ("Payment-Authorization", "x"),
            ("Accept-Payment", "tempo"),
            ("Payment-Receipt", "r"),
            ("WWW-Authenticate", 'Payment id="1"'),
            ("Payment-Anything-New", "y"),
            ("Authorization", 'Payment credential="abc"'),
        ],
    )
    assert not [n for n in got if n.startswith("payment-")]
    assert "accept-payment" not in got
    assert "www-authenticate" not in got
    assert "authorization" not in got


def test_client_forwarding_claims_are_dropped(client: httpx.Client) -> None:
    got = seen(
        client,
        "/plain/echo",
        [
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Host", "evil"),
            ("X-Forwarded-Proto", "https"),
            ("Forwarded", "for=1.2.3.4"),
        ],
    )
    assert not [n for n in got if n.startswith("x-forwarded-") or n == "forwarded"]


def test_forward_client_ip_adds_our_own_forwarded_headers(client: httpx.Client) -> None:
    got = seen(client, "/fwd/echo", [("X-Forwarded-For", "1.2.3.4"), ("Forwarded", "for=6.6.6.6")])
    assert got["x-forwarded-for"] == ["127.0.0.1"]
    assert got["x-forwarded-proto"] == ["http"]
    assert got["forwarded"] == ["for=127.0.0.1;proto=http"]


def test_service_strip_list_is_case_insensitive(client: httpx.Client) -> None:
    got = seen(
        client,
        "/tenant/echo",
        [("openai-organization", "org-client"), ("OpenAI-Project", "p"), ("X-Other", "1")],
    )
    assert "openai-organization" not in got
    assert "openai-project" not in got
    assert got["x-other"] == ["1"]


@pytest.mark.parametrize(
    ("sid", "name", "value"),
    [
        ("bearer", "authorization", f"Bearer {UPSTREAM_KEY}"),
        ("keyed", "x-api-key", UPSTREAM_KEY),
        ("basic", "authorization", "Basic dXNlcjpwdw=="),
    ],
)
def test_service_auth_is_injected_and_replaces_client_values(
    client: httpx.Client, sid: str, name: str, value: str
) -> None:
    got = seen(
        client,
        f"/{sid}/echo",
        [("Authorization", "Bearer client"), ("X-Api-Key", "client-key")],
    )
    assert got[name] == [value]
    # The client's Authorization never passes, whatever the service injects.
    assert got.get("authorization", [value]) == [value]


def test_upstream_key_never_reaches_the_client(client: httpx.Client) -> None:
    r = client.get("/bearer/status/500")
    assert r.status_code == 500
    assert UPSTREAM_KEY not in r.text
    assert UPSTREAM_KEY not in str(r.headers)


def test_response_hop_by_hop_and_strip_list_are_dropped(client: httpx.Client) -> None:
    r = client.get(
        "/cookies/response-headers",
        params=[
            ("Set-Cookie", "a=b"),
            ("X-Internal", "1"),
            ("Connection", "X-Conn-Named"),
            ("X-Conn-Named", "drop"),
            ("Keep-Alive", "timeout=5"),
            ("Content-Encoding", "identity"),
            ("X-Public", "kept"),
        ],
    )
    assert r.status_code == 200
    assert "set-cookie" not in r.headers
    assert "x-internal" not in r.headers
    assert "x-conn-named" not in r.headers
    assert "keep-alive" not in r.headers
    assert r.headers["x-public"] == "kept"
    assert r.headers["content-encoding"] == "identity"


def test_set_cookie_is_dropped_by_default(client: httpx.Client) -> None:
    r = client.get("/plain/response-headers", params=[("Set-Cookie", "a=b")])
    assert "set-cookie" not in r.headers


# ---------------------------------------------------------------------------- properties

STRIPPED = [
    *sorted(
        n.decode()
        for n in REQUEST_STRIP
        # re-emitted by the core itself (x-request-id: kept when well-formed, else replaced)
        if n
        not in (
            b"host",
            b"content-length",
            b"transfer-encoding",
            b"connection",
            b"expect",
            b"x-request-id",
        )
    ),
    "proxy-foo",
    "payment-foo",
    "x-forwarded-foo",
    "x-api-key",
    "openai-organization",
]
BENIGN = ["x-a", "x-b", "accept", "content-type"]


def _random_case(draw: st.DrawFn, name: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if f else c for c, f in zip(name, flips, strict=True))


@st.composite
def client_headers(draw: st.DrawFn) -> list[tuple[str, str]]:
    names = draw(st.lists(st.sampled_from(STRIPPED + BENIGN), max_size=12))
    value = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789=;, ", min_size=1, max_size=12)
    out = [(_random_case(draw, n), draw(value).strip() or "v") for n in names]
    return draw(st.permutations(out))


STRIP_RULES = RequestHeaderRules(
    host=b"up.example",
    auth=((b"authorization", b"Bearer injected"),),
    strip=("OpenAI-Organization", "x-api-key"),
)


@given(client_headers())
def test_property_no_stripped_header_survives_and_auth_is_the_only_credential(
    headers: list[tuple[str, str]],
) -> None:
    raw = [(n.encode(), v.encode()) for n, v in headers]
    out, *_ = STRIP_RULES.apply(raw)
    names = [n for n, _ in out]
    for n in names:
        assert n == n.lower()
        assert n not in STRIP_RULES.strip or (n, dict(out)[n]) in STRIP_RULES.inject
        assert not n.startswith((b"payment-", b"x-forwarded-")) and n != b"cookie"
    assert [v for n, v in out if n == b"authorization"] == [b"Bearer injected"]
    assert names.count(b"host") == 1
    benign = [(n.lower(), v) for n, v in raw if n.lower().decode() in BENIGN]
    assert [h for h in out if h[0].decode() in BENIGN] == benign


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(client_headers())
def test_property_end_to_end_the_upstream_sees_only_the_injected_credential(
    client: httpx.Client, headers: list[tuple[str, str]]
) -> None:
    got = seen(client, "/tenant/echo", headers)
    assert got["authorization"] == [f"Bearer {UPSTREAM_KEY}"]
    for name in got:
        assert name not in STRIPPED or name == "authorization"
        assert not name.startswith(("payment-", "x-forwarded-", "proxy-"))


def test_connection_named_header_is_removed_from_response_rules() -> None:
    rules = ResponseHeaderRules(("set-cookie",))
    out = rules.apply(
        [
            (b"connection", b"close, x-a"),
            (b"x-a", b"1"),
            (b"transfer-encoding", b"chunked"),
            (b"set-cookie", b"s"),
            (b"content-length", b"3"),
            (b"content-type", b"text/plain"),
        ]
    )
    # content-length next to transfer-encoding is stale (RFC 9112 6.3): dropped too.
    assert out == [(b"content-type", b"text/plain")]
