"""The limit pieces on their own: RateLimit fields, policy names, spend windows, the shedder's
p90, the in-flight gate's queue, key values, the payer a credential claims, and the
in-process limiter against the reference GCRA."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpp_proxy.config.model import RateLimit
from mpp_proxy.limits import local as local_module
from mpp_proxy.limits.capacity import InFlight
from mpp_proxy.limits.keys import KeyReader, ip_value
from mpp_proxy.limits.local import LocalRate
from mpp_proxy.limits.rates import MICRO, RatePolicy, policy_names
from mpp_proxy.limits.shedding import MIN_SAMPLES, Shedder, Verdict
from mpp_proxy.limits.windows import window
from mpp_proxy.payments import claimed_payer, has_credential
from mpp_proxy.state.codec import gcra
from mpp_proxy.state.memory import MemoryStore

TEN_PER_MINUTE = RateLimit(10, 60.0, 10, "ip", "", "10/minute")


def test_fields_count_what_remains_and_when_it_is_all_back() -> None:
    policy = RatePolicy(TEN_PER_MINUTE, "ip", "r:api:GET /x")
    assert policy.policy_field() == b'"ip";q=10;w=60'
    # After the first request of a full bucket: 9 left, all back in 6 s.
    assert policy.field(6 * MICRO) == b'"ip";r=9;t=6'
    assert policy.field(60 * MICRO) == b'"ip";r=0;t=60'
    # Refused: 66 s of a 60 s capacity in use with it, so it fits again in 6 s.
    assert policy.retry_after(66 * MICRO) == 6
    assert policy.refused_field(66 * MICRO) == b'"ip";r=0;t=6'
    # A bucket that had room (another one refused the request) says so, without the request.
    assert policy.refused_field(12 * MICRO) == b'"ip";r=9;t=6'


def test_a_burst_smaller_than_the_count_caps_what_may_arrive_at_once() -> None:
    policy = RatePolicy(RateLimit(60, 60.0, 10, "payer", "", "60/minute"), "payer", "s")
    assert policy.interval == MICRO
    assert policy.capacity == 10 * MICRO
    assert policy.remaining(MICRO) == 9


def test_policy_names_are_the_key_unless_given_and_unique() -> None:
    ip = RateLimit(1, 1.0, 1, "ip")
    named = RateLimit(1, 1.0, 1, "ip", name="mine")
    levels = [(ip, "route"), (ip, "route"), (named, "route"), (ip, "service")]
    assert policy_names(levels) == ["ip", "ip-2", "mine", "service.ip"]


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("per", "now", "start", "end"),
    [
        ("minute", "2026-03-04 10:20:30", "2026-03-04 10:20:00", "2026-03-04 10:21:00"),
        ("hour", "2026-03-04 10:20:30", "2026-03-04 10:00:00", "2026-03-04 11:00:00"),
        ("day", "2026-03-04 23:59:59", "2026-03-04 00:00:00", "2026-03-05 00:00:00"),
        ("week", "2026-03-04 10:00:00", "2026-03-02 00:00:00", "2026-03-09 00:00:00"),
        ("week", "2026-03-02 00:00:00", "2026-03-02 00:00:00", "2026-03-09 00:00:00"),
        ("month", "2026-12-31 23:00:00", "2026-12-01 00:00:00", "2027-01-01 00:00:00"),
        ("month", "2028-02-29 12:00:00", "2028-02-01 00:00:00", "2028-03-01 00:00:00"),
    ],
)
def test_spend_windows_are_utc_calendar_units(per: str, now: str, start: str, end: str) -> None:
    assert window(per, stamp(now)) == (int(stamp(start)), int(stamp(end)))


def test_shedding_starts_when_the_p90_is_above_the_threshold() -> None:
    shedder = Shedder(1.0)
    for _ in range(MIN_SAMPLES - 1):
        shedder.record(5.0)
    assert shedder.admit() is Verdict.ADMIT  # too few samples to judge
    fresh = Shedder(1.0)
    for _ in range(9):
        fresh.record(0.1)
    fresh.record(5.0)
    assert fresh.admit() is Verdict.ADMIT  # one slow in ten: the p90 is a fast one
    fresh.record(5.0)
    assert fresh.admit() is Verdict.SHED  # two in eleven: the p90 is slow
    assert 1 <= fresh.retry_after() <= 1


def test_a_probe_in_time_reopens_a_slow_probe_keeps_shedding() -> None:
    shedder = Shedder(0.001)  # probes every second
    for _ in range(MIN_SAMPLES):
        shedder.record(1.0)
    assert shedder.admit() is Verdict.SHED
    shedder._probe_at = 0.0  # the probe interval has passed
    assert shedder.admit() is Verdict.PROBE
    assert shedder.admit() is Verdict.SHED  # one probe at a time
    shedder.record(1.0, probe=True)
    assert shedder.admit() is Verdict.SHED
    shedder._probe_at = 0.0
    assert shedder.admit() is Verdict.PROBE
    shedder.abandon()  # that probe never reached the upstream: another may go
    assert shedder.admit() is Verdict.PROBE
    shedder.record(0.0, probe=True)
    assert shedder.admit() is Verdict.ADMIT
    shedder.record(1.0)  # the old slow samples are forgotten: one is not enough
    assert shedder.admit() is Verdict.ADMIT


def test_the_in_flight_gate_queues_in_order_and_refuses_beyond_the_queue() -> None:
    async def main() -> list[object]:
        gate = InFlight(1, 1, timeout=5)
        assert gate.try_enter()
        waiting = asyncio.ensure_future(gate.enter())
        await asyncio.sleep(0)
        assert gate.waiting == 1
        refused = await gate.enter()  # the queue is full: refused at once
        gate.leave()  # the slot goes to the waiter
        got = await waiting
        gate.leave()
        return [refused, got, gate.active, gate.waiting]

    assert asyncio.run(main()) == [False, True, 0, 0]


def test_a_queued_request_that_waits_too_long_leaves_the_queue() -> None:
    async def main() -> list[object]:
        gate = InFlight(1, 3, timeout=0.05)
        assert gate.try_enter()
        timed_out = await gate.enter()
        waiting = gate.waiting
        gate.leave()
        return [timed_out, waiting, gate.active]

    assert asyncio.run(main()) == [False, 0, 0]


def test_key_values() -> None:
    assert ip_value("203.0.113.9") == "ip:203.0.113.9"
    assert ip_value("2001:db8:1:2:3:4:5:6") == "ip:2001:db8:1:2::/64"
    headers = [(b"x-team", b"red"), (b"x-long", b"v" * 500)]
    team = KeyReader("header:x-team")
    assert team.value("1.2.3.4", None, "GET /x", headers) == "h:red"
    assert KeyReader("header:x-long").value("1.2.3.4", None, "r", headers).startswith("h:#")
    assert KeyReader("header:x-none").value("1.2.3.4", None, "r", headers) == "ip:1.2.3.4"
    payer = KeyReader("payer")
    assert payer.value("1.2.3.4", "did:x:1", "r", []) == "payer:did:x:1"
    assert payer.value("1.2.3.4", None, "r", []) == "ip:1.2.3.4"
    assert KeyReader("route").value("1.2.3.4", None, "GET /x", []) == "GET /x"


def credential(document: object) -> list[tuple[bytes, bytes]]:
    token = base64.urlsafe_b64encode(orjson.dumps(document)).rstrip(b"=")
    return [(b"authorization", b"Bearer abc, Payment " + token)]


def test_the_claimed_payer_is_the_credentials_source_did_or_nothing() -> None:
    assert claimed_payer(credential({"source": "did:pkh:eip155:1:0xab"})) == (
        "did:pkh:eip155:1:0xab"
    )
    assert claimed_payer(credential({"source": "alice"})) is None  # not a DID
    assert claimed_payer(credential({"source": "did:" + "x" * 300})) is None  # too long
    assert claimed_payer(credential(["source"])) is None
    assert claimed_payer([(b"authorization", b"Payment !!!")]) is None
    assert claimed_payer([(b"accept-payment", b"tempo/charge")]) is None


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(1, 3000),
    period=st.sampled_from([1.0, 60.0, 3600.0, 86400.0]),
    burst_share=st.floats(0.001, 1.0),
    steps=st.lists(st.integers(0, 5 * MICRO), min_size=1, max_size=60),
    client=st.sampled_from(["10.1.2.3", "2001:db8::7"]),
    fields=st.booleans(),
)
def test_the_in_process_limiter_decides_and_reads_as_the_reference_gcra(
    count: int,
    period: float,
    burst_share: float,
    steps: list[int],
    client: str,
    fields: bool,
) -> None:
    """LocalRate (the in-process fast path, with its precomputed field pieces) against the
    decision every store makes (state.codec.gcra) and RatePolicy's own fields, at set times."""
    burst = max(1, round(count * burst_share))
    limit = RateLimit(count, period, burst, "ip", "", f"{count}/{period:g}s")
    policy = RatePolicy(limit, "ip", "r:api:GET /x")
    store = MemoryStore()
    now = [10**12]
    local = LocalRate(policy, store, "GET /x", fields)
    bucket = policy.prefix + ip_value(client)
    tat: int | None = None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local_module, "monotonic_ns", lambda: now[0] * 1000)
        for step in steps:
            now[0] += step
            taken, news = gcra([tat], [policy.spec], [], [], now[0])
            got = local.take(client, [])
            used = taken.used[0]
            if not taken.ok:
                assert got == -used
                continue
            tat = news[0]
            assert store.rate_table[bucket] == tat
            expected = (
                (b"ratelimit-policy", policy.policy_field()),
                (b"ratelimit", policy.field(used)),
            )
            assert got == (expected if fields else ())


def test_an_x402_payment_presents_a_payment_but_claims_no_payer() -> None:
    # Presented: a paid request takes its upstream connection at admit, before the gate.
    x402 = [(b"payment-signature", b"eyJ4NDAyVmVyc2lvbiI6Mn0")]
    assert has_credential(x402)
    assert has_credential(credential({"source": "did:pkh:eip155:1:0xab"}))
    assert not has_credential([(b"accept-payment", b"tempo/charge")])
    assert claimed_payer(x402) is None  # a payer key counts it by ip
