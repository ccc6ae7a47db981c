"""Request durations are counted into histograms at the flush, many at once: the exposition
must be what prometheus-client's own observe(), one value at a time, would have made."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from mpp_proxy.observe.metrics import _add_observations
from mpp_proxy.observe.outcome import BUCKETS, BUCKETS_US


def _histogram() -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    return registry, Histogram("t_seconds", "t", ["route"], registry=registry, buckets=BUCKETS)


@pytest.mark.parametrize("seed", range(5))
def test_batched_observations_expose_what_observe_would(seed: int) -> None:
    rng = random.Random(seed)
    values = [int(rng.lognormvariate(8, 2.5)) for _ in range(2000)]
    # Every bound itself and one past it: a value equal to a bound is in that bucket.
    values += [*BUCKETS_US, *(b + 1 for b in BUCKETS_US), 0, 90_000_000]
    rng.shuffle(values)
    ours, theirs = _histogram(), _histogram()
    for us in values:
        theirs[1].labels("r").observe(us / 1_000_000)
    _add_observations(ours[1].labels("r"), list(values))
    expected = generate_latest(theirs[0]).decode().splitlines()
    got = generate_latest(ours[0]).decode().splitlines()
    assert [line for line in got if "_bucket" in line or "_count" in line] == [
        line for line in expected if "_bucket" in line or "_count" in line
    ]
    total = next(float(line.split()[-1]) for line in got if line.startswith("t_seconds_sum"))
    assert total == pytest.approx(sum(values) / 1_000_000, rel=1e-12)


def test_the_buckets_in_microseconds_are_the_buckets() -> None:
    assert [b / 1_000_000 for b in BUCKETS_US] == list(BUCKETS)
