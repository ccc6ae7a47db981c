"""Byte compatibility with pympp: its server verifies our fast challenges, its client pays them."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import httpx
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from mpp import Challenge, Credential, Receipt
from mpp.client import PaymentTransport
from mpp.errors import InvalidChallengeError, MalformedCredentialError
from mpp.server.http import PaymentRequired, PaymentVerified, Request
from mpp.server.verify import _authenticate_echo
from payment_harness import REALM, SECRET, Harness, with_harness, www_authenticate

from mpp_proxy.client.testmoney import client_method, pay_challenge
from mpp_proxy.payments import Authorization, PaidRequest
from mpp_proxy.payments.challenges import ChallengeMint, scope_dict, scope_json
from mpp_proxy.payments.credentials import issued_echo
from mpp_proxy.problems import Problem

FORECAST = "GET /v1/forecast/:city"


def test_pympp_server_verifies_a_credential_made_for_our_challenge() -> None:
    async def body(h: Harness) -> None:
        req = h.request(FORECAST, "/api/v1/forecast/paris", query="units=c&x=%20y")
        credential = pay_challenge(www_authenticate(await h.challenge(req)))
        handler = h.gate.pympp_handler(h.service, req.route)
        result = await handler(
            Request(
                "GET",
                "http://api.test/api/v1/forecast/paris?units=c&x=%20y",
                headers={"Authorization": credential},
            )
        )
        assert isinstance(result, PaymentVerified), getattr(result, "challenge", None)
        assert result.receipt.reference.startswith("test_")
        # ...and refuses it on another path, like we do
        other = h.request(FORECAST, "/api/v1/forecast/rome")
        credential = pay_challenge(www_authenticate(await h.challenge(other)))
        result = await handler(
            Request(
                "GET",
                "http://api.test/api/v1/forecast/paris",
                headers={"Authorization": credential},
            )
        )
        assert isinstance(result, PaymentRequired) and result.status == 402

    with_harness(body)


def test_our_challenge_request_is_what_pympp_issues_for_the_same_request() -> None:
    async def body(h: Harness) -> None:
        req = h.request(FORECAST, "/api/v1/forecast/s%C3%A3o%20paulo", query="a=1&b=%2F")
        ours = Challenge.from_www_authenticate(www_authenticate(await h.challenge(req))[0])
        handler = h.gate.pympp_handler(h.service, req.route)
        result = await handler(
            Request("GET", "http://api.test/api/v1/forecast/s%C3%A3o%20paulo?a=1&b=%2F")
        )
        assert isinstance(result, PaymentRequired)
        theirs = Challenge.from_www_authenticate(
            result.challenge.headers.get_list("www-authenticate")[0]
        )
        assert ours.request_b64 == theirs.request_b64
        assert ours.request == theirs.request
        assert (ours.realm, ours.method, ours.intent) == (
            theirs.realm,
            theirs.method,
            theirs.intent,
        )
        assert ours.opaque is not None and set(ours.opaque) == set(theirs.opaque or {})
        assert ours.verify(SECRET, REALM)

    with_harness(body)


def test_our_gate_accepts_a_credential_for_a_pympp_issued_challenge() -> None:
    async def body(h: Harness) -> None:
        route = h.route(FORECAST)
        handler = h.gate.pympp_handler(h.service, route)
        result = await handler(Request("GET", "http://api.test/api/v1/forecast/oslo"))
        assert isinstance(result, PaymentRequired)
        credential = pay_challenge(result.challenge.headers.get_list("www-authenticate"))
        auth = await h.authorize(
            h.request(FORECAST, "/api/v1/forecast/oslo", headers=[("Authorization", credential)])
        )
        assert isinstance(auth, Authorization), getattr(auth, "body", auth)
        await auth.delivered()

    with_harness(body)


def _transport(h: Harness, seen: list[int]) -> httpx.MockTransport:
    """A stand-in HTTP server: the gate decides, a 200 body stands for the upstream."""

    async def handle(request: httpx.Request) -> httpx.Response:
        route = h.route(FORECAST)
        decision = await h.authorize(
            PaidRequest.of(
                h.gate.offers_for(h.service, route),
                request.method,
                request.url.raw_path.decode().split("?")[0],
                request.url.query.decode(),
                [(k.lower(), v) for k, v in request.headers.raw],
            )
        )
        seen.append(decision.status if isinstance(decision, Problem) else 200)
        if isinstance(decision, Problem):
            return httpx.Response(decision.status, headers=decision.headers, content=decision.body)
        await decision.delivered()
        return httpx.Response(200, headers=decision.receipt_headers, json={"temp": 21})

    return httpx.MockTransport(handle)


def test_pympp_client_pays_our_challenge() -> None:
    async def body(h: Harness) -> None:
        seen: list[int] = []
        transport = PaymentTransport(methods=[client_method()], inner=_transport(h, seen))
        async with httpx.AsyncClient(transport=transport) as client:
            r = await client.get("http://api.test/api/v1/forecast/paris?units=c")
        assert r.status_code == 200, r.text
        assert r.json() == {"temp": 21}
        assert seen == [402, 200]
        receipt = Receipt.from_payment_receipt(r.headers["payment-receipt"])
        assert receipt.method == "test" and receipt.reference.startswith("test_")
        assert r.headers["cache-control"] == "private"

    with_harness(body)


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x2FFF), max_size=30
)


@settings(max_examples=300, deadline=None)
@given(method=st.sampled_from(["GET", "POST", "PATCH"]), path=_text, query=_text)
def test_scope_json_is_jcs(method: str, path: str, query: str) -> None:
    scope = scope_dict(method, "/" + path, query)
    assert scope_json(scope) == bytes(rfc8785.dumps(scope))


@settings(max_examples=100, deadline=None)
@given(path=_text, query=_text, description=_text)
def test_minted_challenges_verify_and_match_pympp_encoding(
    path: str, query: str, description: str
) -> None:
    wire: dict[str, Any] = {"amount": "5", "currency": "TEST", "methodDetails": {"decimals": 2}}
    mint = ChallengeMint(
        secret_key=SECRET,
        realm=REALM,
        method="test",
        intent="charge",
        wire=wire,
        description=description.replace("\r", "").replace("\n", "") or None,
    )
    scope = scope_dict("GET", "/" + path, query)
    value = mint.issue(scope_json(scope), "2030-01-01T00:00:00Z")
    challenge = Challenge.from_www_authenticate(value)
    assert challenge.verify(SECRET, REALM)
    assert challenge.request == {**wire, "_mppx_scope": scope}
    assert challenge.to_www_authenticate(REALM) == value


_segment = st.text(alphabet="abcAB01-_.~%20é", min_size=1, max_size=6)
_query = st.text(alphabet="ab=&%201", max_size=6)


@settings(max_examples=40, deadline=None)
@given(bought=st.tuples(_segment, _query), used=st.tuples(_segment, _query))
def test_a_credential_opens_exactly_the_request_it_was_bought_for(
    bought: tuple[str, str], used: tuple[str, str]
) -> None:
    async def body(h: Harness) -> None:
        first = h.request(FORECAST, f"/api/v1/forecast/{bought[0]}", query=bought[1])
        credential = pay_challenge(www_authenticate(await h.challenge(first)))
        second = h.request(
            FORECAST,
            f"/api/v1/forecast/{used[0]}",
            query=used[1],
            headers=[("Authorization", credential)],
        )
        result = await h.authorize(second)
        same = scope_dict("GET", first.path, first.query) == scope_dict(
            "GET", second.path, second.query
        )
        assert isinstance(result, Authorization) == same, (bought, used)
        if not same:
            assert isinstance(result, Problem) and result.status == 402

    with_harness(body)


def _b64(value: Any, *, canonical: bool) -> str:
    raw = rfc8785.dumps(value) if canonical else json.dumps(value, indent=1).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "field", ["none", "reencoded", "realm", "expires", "digest", "amount", "id"]
)
def test_our_echo_check_agrees_with_pympp_on_issued_altered_and_re_encoded_echoes(
    field: str,
) -> None:
    """The echo check that skips re-encoding accepts exactly the strings this server issued;
    anything else goes to pympp's authenticate_echo, so the verdict is always pympp's."""

    async def body(h: Harness) -> None:
        req = h.request(FORECAST, "/api/v1/forecast/paris")
        credential = Credential.from_authorization(
            pay_challenge(www_authenticate(await h.challenge(req)))
        )
        echo = credential.challenge
        request = json.loads(base64.urlsafe_b64decode(echo.request + "=="))
        changed = {
            "none": {},
            "reencoded": {"request": _b64(request, canonical=False)},
            "realm": {"realm": echo.realm + "x"},
            "expires": {"expires": "2999-01-01T00:00:00Z"},
            "digest": {"digest": "sha-256=AAAA"},
            "amount": {"request": _b64({**request, "amount": "1"}, canonical=True)},
            "id": {"id": echo.id[:-2] + ("AA" if not echo.id.endswith("AA") else "BB")},
        }[field]
        altered = replace(credential, challenge=replace(echo, **changed))
        try:
            pympp: Any = _authenticate_echo(altered, secret_key=SECRET)
        except (InvalidChallengeError, MalformedCredentialError) as exc:
            pympp = type(exc)
        fast = issued_echo(altered, SECRET)
        if field == "none":
            assert fast == pympp and fast is not None
        else:
            # Only what we issued byte for byte takes the short path ...
            assert fast is None
        # ... and the gate's verdict is pympp's either way.
        assert (fast or pympp) == pympp
        if field in ("realm", "expires", "digest", "amount", "id"):
            assert pympp is InvalidChallengeError
        if field == "reencoded":
            assert isinstance(pympp, tuple) and pympp[0] == request

    with_harness(body)
