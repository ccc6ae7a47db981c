"""The admit stage's logic: rate limits, spend caps, concurrency slots and load shedding,
decided before payment. The core calls `RouteLimits.admit` and holds the Admission it gets
until the request ends; nothing here touches a socket but the store's."""

from __future__ import annotations

from collections.abc import Mapping

from mpp_proxy.config.model import PaymentMethod, Route, Service
from mpp_proxy.limits.admission import Admission, RouteLimits, ServiceCapacity
from mpp_proxy.limits.local import LocalRate
from mpp_proxy.limits.refusals import over_capacity
from mpp_proxy.state.base import Store

__all__ = [
    "Admission",
    "LocalRate",
    "RouteLimits",
    "ServiceCapacity",
    "compile_limits",
    "over_capacity",
    "service_capacity",
]


def service_capacity(service: Service) -> ServiceCapacity | None:
    """The service's in-flight cap and shedder, or None when it has neither."""
    if service.capacity.empty:
        return None
    return ServiceCapacity(service.id, service.capacity)


def compile_limits(
    service: Service,
    route: Route,
    store: Store,
    capacity: ServiceCapacity | None,
    methods: Mapping[str, PaymentMethod],
) -> RouteLimits | None:
    """A route's compiled limits, or None when the admit stage has nothing to do for it.

    A paid route always gets them: its request takes an upstream connection at admit.
    """
    if route.price is None and route.limits.empty and service.limits.empty and capacity is None:
        return None
    names = route.price.pay_with if route.price is not None else ()
    currencies = frozenset(methods[n].currency for n in names if n in methods)
    return RouteLimits(service, route, store, capacity, currencies)
