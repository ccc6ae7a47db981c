"""The startup banner: a pure function of the config and listener, printed by serve and check."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from mpp_proxy import __version__
from mpp_proxy.cli import banner_limits
from mpp_proxy.cli.redact import public_url
from mpp_proxy.config import config_warnings
from mpp_proxy.config.checks import url_origin
from mpp_proxy.config.model import (
    BasicAuth,
    BearerAuth,
    Config,
    EvmMethod,
    HeaderAuth,
    PaymentMethod,
    Route,
    Service,
    StripeMethod,
    TempoMethod,
    TestMoneyMethod,
)
from mpp_proxy.discovery.prices import currency_label

_TEMPO_CHAINS = {4217: "Tempo", 42431: "Tempo testnet", 31337: "Tempo dev chain"}
_RULE = "!" * 78


@dataclass(frozen=True, slots=True)
class Listener:
    """Where the proxy listens and with how many worker processes."""

    host: str
    port: int
    workers: int = 1
    tls: bool = False

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def local_url(self) -> str:
        """A URL a local client can actually call (wildcard binds are reached via loopback)."""
        if self.host in ("0.0.0.0", ""):
            return f"{self.scheme}://127.0.0.1:{self.port}"
        if self.host == "::":
            return f"{self.scheme}://[::1]:{self.port}"
        return self.url


def describe_method(method: PaymentMethod) -> str:
    """One phrase, no secrets: "USDC on Tempo", "USD card via Stripe", "TEST test money"."""
    currency = currency_label(method)
    if isinstance(method, TempoMethod):
        chain = _TEMPO_CHAINS.get(method.chain_id, f"Tempo chain {method.chain_id}")
        return f"{currency} on {chain}"
    if isinstance(method, StripeMethod):
        return f"{currency} via Stripe ({', '.join(method.payment_method_types)})"
    if isinstance(method, EvmMethod):
        return f"{currency} on EVM chain {method.chain_id}"
    return f"{currency} test money"


def format_amount(amount: Decimal) -> str:
    """ "0.050" -> "0.05", "1E+1" -> "10": the display form of a price, never scientific."""
    text = format(amount.normalize(), "f")
    return text


def describe_price(config: Config, route: Route) -> str:
    if route.price is None:
        return "free"
    amount = format_amount(route.price.amount)
    offers: list[str] = []
    for name in route.price.pay_with:
        try:
            method = config.method(name)
        except KeyError:
            offers.append(f"{name} (undefined method)")
            continue
        offers.append(f"{name}: {amount} {currency_label(method)}")
    return " | ".join(offers) if offers else amount


def describe_auth(service: Service) -> str:
    auth = service.auth
    if isinstance(auth, BearerAuth):
        return "bearer token"
    if isinstance(auth, HeaderAuth):
        return f"key in header {auth.header}"
    if isinstance(auth, BasicAuth):
        return "HTTP Basic"
    return "no upstream auth"


def _method_line(method: PaymentMethod) -> str:
    details = [describe_method(method)]
    if isinstance(method, TempoMethod | EvmMethod):
        details.append(f"recipient {method.recipient}")
    if isinstance(method, TempoMethod) and method.rpc_url:
        details.append(f"rpc {url_origin(method.rpc_url)}")
    if isinstance(method, EvmMethod) and method.facilitator_url:
        details.append(f"facilitator {url_origin(method.facilitator_url)}")
    if isinstance(method, StripeMethod):
        details.append(f"api {url_origin(method.api_base)}")
    return f"  {method.name:<12} {method.kind:<7} " + ", ".join(details)


def warnings(config: Config, workers: int = 1) -> list[str]:
    """Everything an operator must not miss: test money, unshared or volatile state."""
    found: list[str] = []
    test_methods = [m.name for m in config.methods if isinstance(m, TestMoneyMethod)]
    if test_methods and config.proxy.allow_test_payments:
        found.append(
            f"TEST PAYMENTS ALLOWED: method(s) {', '.join(test_methods)} accept play money, so "
            "anyone can call the paid routes that offer them for free. Never expose this proxy."
        )
    elif config.proxy.allow_test_payments:
        found.append("allow_test_payments is on (no test-money method is defined).")
    if config.proxy.state.startswith("memory:"):
        if workers > 1:
            found.append(
                f"MEMORY STATE WITH {workers} WORKERS: each worker keeps its own replay "
                "protection, so a credential paid once could be redeemed once per worker. "
                "Use sqlite:///path or redis://."
            )
        else:
            found.append("memory state: the ledger and replay protection are lost on restart.")
    # The config's own advice: test money not allowed, unused methods.
    found.extend(config_warnings(config))
    return found


def render_banner(config: Config, listener: Listener, *, source: str | None = None) -> str:
    """The startup banner. Never prints a secret (keys, tokens, passwords, URL userinfo)."""
    lines: list[str] = [f"mpp-proxy {__version__}"]
    workers = f" ({listener.workers} workers)" if listener.workers > 1 else ""
    lines.append(f"  config     {source or config.source}")
    lines.append(f"  listening  {listener.url}{workers}")
    lines.append(f"  state      {public_url(config.proxy.state)}")
    lines.append(f"  realm      {config.proxy.realm}")
    if config.proxy.title:
        lines.append(f"  title      {config.proxy.title}")

    lines.append("")
    lines.append("payment methods" if config.methods else "payment methods: none")
    lines.extend(_method_line(m) for m in config.methods)

    lines.append("")
    lines.append("services" if config.services else "services: none")
    width = max(
        (len(r.method) + 2 + len(s.id) + len(r.pattern) for s in config.services for r in s.routes),
        default=0,
    )
    for service in config.services:
        extra = [describe_auth(service)]
        if service.preset:
            extra.insert(0, f"preset {service.preset}")
        lines.append(f"  {service.id} -> {public_url(service.base_url)}  ({'; '.join(extra)})")
        lines.extend(f"    {line}" for line in banner_limits.service_lines(config, service))
        for route in service.routes:
            target = f"{route.method} /{service.id}{route.pattern}"
            text = f"    {target:<{width}}  {describe_price(config, route)}"
            if route.description:
                text += f"  -- {route.description}"
            lines.append(text)
            limited = banner_limits.route_line(config, service, route)
            if limited:
                lines.append(f"      {limited}")

    base = listener.local_url
    lines.append("")
    lines.append("discovery")
    lines.append(f"  {base}/llms.txt")
    lines.append(f"  {base}/openapi.json")
    lines.append(f"  {base}/healthz  {base}/readyz")
    lines.extend(banner_limits.proxy_lines(config, listener.workers))

    found = warnings(config, listener.workers)
    if found:
        lines.append("")
        lines.append(_RULE)
        lines.extend(f"!! WARNING: {w}" for w in found)
        lines.append(_RULE)
    return "\n".join(lines) + "\n"
