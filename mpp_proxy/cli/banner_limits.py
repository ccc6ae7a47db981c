"""The banner's limit lines: where limits are counted and shared, what they do when their
store fails, per-process capacity, how the client address is found; per service and route."""

from __future__ import annotations

from mpp_proxy.config.model import Config, Route, Service, SpendCap
from mpp_proxy.discovery.limits import caps, currency_of, rates


def _rate(limit_rate: str, key: str, burst: int, count: int) -> str:
    at_once = f", {burst} at once" if burst != count else ""
    return f"{limit_rate} by {key}{at_once}"


def _cap(config: Config, cap: SpendCap) -> str:
    return f"at most {cap.amount} {currency_of(config, cap)} per {cap.per} by {cap.key}"


def route_line(config: Config, service: Service, route: Route) -> str:
    """The route's own limits ("" without), for the line under the route."""
    parts = [
        _rate(r.rate, r.key, r.burst, r.count)
        for r, _, level in rates(service, route)
        if level == "route"
    ]
    parts += [_cap(config, c) for c, level in caps(service, route) if level == "route"]
    return "limits: " + "; ".join(parts) if parts else ""


def service_lines(config: Config, service: Service) -> list[str]:
    """The service's own limits (counted across its routes) and its capacity."""
    out = []
    parts = [_rate(r.rate, r.key, r.burst, r.count) for r in service.limits.rates]
    parts += [_cap(config, c) for c in service.limits.spend]
    if parts:
        out.append("limits (whole service): " + "; ".join(parts))
    capacity = service.capacity
    shown = []
    if capacity.max_in_flight is not None:
        queued = f", {capacity.queue} queued up to {capacity.queue_timeout:g} s"
        shown.append(f"{capacity.max_in_flight} in flight{queued if capacity.queue else ''}")
    if capacity.shed_above is not None:
        shown.append(f"sheds load while the upstream's p90 is over {capacity.shed_above:g} s")
    if shown:
        out.append("capacity: " + "; ".join(shown))
    return out


def _counted_in(state: str) -> str:
    if state.startswith("memory:"):
        return "in this process (memory://)"
    if state.startswith("sqlite:"):
        return (
            "in the SQLite file, shared by every worker process on this machine "
            "(one write per limited request)"
        )
    return "in Redis, shared by every worker and every instance on it"


def _store_errors(config: Config) -> list[str]:
    overrides = []
    for service in config.services:
        for route in service.routes:
            limited = rates(service, route) or caps(service, route)
            mode = route.limits.on_store_error or service.limits.on_store_error
            if limited and mode is not None:
                overrides.append(f"{service.id} {route.key}: {mode}")
    line = "  store down paid routes refuse (503), free routes let requests through"
    if config.proxy.state.startswith("memory:"):
        line = "  store down never (counted in memory)"
    elif overrides:
        line += "; set: " + ", ".join(overrides)
    return [line]


def proxy_lines(config: Config, workers: int) -> list[str]:
    """The "limits" section, or nothing when no limit, cap or trusted proxy is configured."""
    limited = any(rates(s, r) or caps(s, r) for s in config.services for r in s.routes)
    capped = any(not s.capacity.empty for s in config.services)
    trusted = config.proxy.trusted_proxies
    if not (limited or capped or trusted):
        return []
    lines = ["", "limits"]
    if limited:
        lines.append(f"  counters   {_counted_in(config.proxy.state)}")
        lines.extend(_store_errors(config))
    if capped:
        per = f" (with {workers} workers, each cap {workers} times over)" if workers > 1 else ""
        lines.append(f"  capacity   in-flight caps and shedding count per worker process{per}")
    header = "Forwarded" if config.proxy.forwarded_header == "forwarded" else "X-Forwarded-For"
    if trusted:
        lines.append(
            f"  client     the rightmost {header} hop not in {', '.join(trusted)} "
            "when the peer is one of them, else the peer"
        )
    else:
        lines.append(
            "  client     the peer address (no trusted_proxies: forwarding headers ignored)"
        )
    return lines
