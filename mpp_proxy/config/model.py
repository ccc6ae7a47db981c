"""The configuration model: frozen dataclasses that every loader produces and every stage reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

RESERVED_SERVICE_IDS = frozenset(
    {"llms.txt", "openapi.json", "healthz", "readyz", "metrics", "admin"}
)

# Methods a route pattern may name; "*" means any method.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
ANY_METHOD = "*"


@dataclass(frozen=True, slots=True)
class Secret:
    """A value that must never be printed: repr and str hide it."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"


# ---------------------------------------------------------------------------- auth


@dataclass(frozen=True, slots=True)
class BearerAuth:
    """`Authorization: Bearer <token>`."""

    token: Secret


@dataclass(frozen=True, slots=True)
class HeaderAuth:
    """A custom header carrying the key, such as `X-Api-Key: <key>`."""

    header: str
    value: Secret


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """HTTP Basic; when only a key is given it is the user and the password is empty."""

    username: Secret
    password: Secret = Secret("")


Auth = BearerAuth | HeaderAuth | BasicAuth


# ---------------------------------------------------------------------------- methods


@dataclass(frozen=True, slots=True)
class TempoMethod:
    """Crypto payments on Tempo (a TIP-20 token transfer)."""

    name: str
    recipient: str
    currency: str
    chain_id: int = 4217
    rpc_url: str | None = None
    decimals: int = 6
    fee_payer_key: Secret | None = None
    kind: Literal["tempo"] = "tempo"


@dataclass(frozen=True, slots=True)
class StripeMethod:
    """Card payments through Stripe shared payment tokens."""

    name: str
    secret_key: Secret
    network_id: str
    currency: str = "usd"
    decimals: int = 2
    payment_method_types: tuple[str, ...] = ("card",)
    api_base: str = "https://api.stripe.com"
    kind: Literal["stripe"] = "stripe"


@dataclass(frozen=True, slots=True)
class EvmMethod:
    """EIP-3009 transfer authorizations on an EVM chain, settled through a facilitator."""

    name: str
    currency: str
    recipient: str
    chain_id: int
    facilitator_url: str | None = None
    decimals: int = 6
    kind: Literal["evm"] = "evm"
    # EIP-712 domain of the token's EIP-3009 signatures; inferred for pympp's known assets.
    eip712_name: str | None = None
    eip712_version: str | None = None
    # Python only: settles a verified authorization and returns its reference (offline tests).
    settle: Callable[[Any], Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TestMoneyMethod:
    """Play money for demos and tests: every credential it issues is honoured, nothing settles."""

    __test__ = False  # not a pytest test class

    name: str
    currency: str = "TEST"
    decimals: int = 2
    kind: Literal["test"] = "test"


PaymentMethod = TempoMethod | StripeMethod | EvmMethod | TestMoneyMethod


# ---------------------------------------------------------------------------- services


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Upstream timeouts in seconds. `read` is per chunk, not for the whole body."""

    connect: float = 10.0
    read: float = 120.0
    write: float = 30.0
    pool: float = 10.0


@dataclass(frozen=True, slots=True)
class Price:
    """A charge in the currency's display unit ("0.05"), offered through the named methods."""

    amount: Decimal
    pay_with: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Route:
    """One `"METHOD /pattern"` entry of a service; free when `price` is None."""

    method: str  # upper-case HTTP method or ANY_METHOD
    pattern: str  # "/v1/forecast/:city", "/v1/files/*"
    price: Price | None = None
    description: str = ""
    # Upstream statuses below this count as delivered (receipt sent, payment kept).
    deliver_below: int = 400
    # Overrides the service's body limit when set.
    max_body_bytes: int | None = None

    @property
    def is_free(self) -> bool:
        return self.price is None

    @property
    def key(self) -> str:
        """The route as written in the config: `"POST /v1/chat/completions"`."""
        return f"{self.method} {self.pattern}"


@dataclass(frozen=True, slots=True)
class Service:
    """An upstream API exposed under `/{id}/...`."""

    id: str
    base_url: str
    routes: tuple[Route, ...]
    title: str = ""
    description: str = ""
    auth: Auth | None = None
    # Request headers removed before forwarding, on top of the fixed strip set (lower-case).
    strip_headers: tuple[str, ...] = ()
    # Response headers removed before answering the client (lower-case).
    strip_response_headers: tuple[str, ...] = ("set-cookie",)
    timeouts: Timeouts = Timeouts()
    max_body_bytes: int = 10 * 1024 * 1024
    forward_client_ip: bool = False
    ca_bundle: str | None = None
    max_connections: int = 100
    preset: str | None = None


# ---------------------------------------------------------------------------- proxy


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """The `[proxy]` table: identity, listener, state, discovery text."""

    secret_key: Secret | None = None
    realm: str = "localhost"
    host: str = "127.0.0.1"
    port: int = 4402
    # A redis URL may carry a password: keep it out of repr.
    state: str = field(default="sqlite:///mpp-proxy-state.db", repr=False)
    title: str = "mpp-proxy"
    description: str = ""
    categories: tuple[str, ...] = ()
    allow_test_payments: bool = False
    # How long an undelivered payment stays redeemable with the same credential.
    credit_ttl: float = 3600.0
    # How long a challenge stays payable.
    challenge_ttl: float = 300.0
    # How long an in-flight paid request's claim lasts without renewal (its process may have died).
    lease_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """`[proxy.metrics]`: the Prometheus exposition and who may read it.

    A scrape is answered when the client's address is in `allow` or it presents `bearer_token`
    (either suffices when both are set); anyone else gets 404 as if the path did not exist.
    """

    enabled: bool = True
    path: str = "/metrics"
    allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    bearer_token: Secret | None = None


@dataclass(frozen=True, slots=True)
class LogSettings:
    """`[proxy.log]`: the access log, one line per request on stdout.

    `access` None means the default: on under `mpp-proxy serve`, off for an embedded app.
    """

    format: Literal["json", "text"] = "json"
    access: bool | None = None
    log_query: bool = False


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """`[proxy.tracing]`: OpenTelemetry spans over OTLP/HTTP; off while `otlp_endpoint` is empty."""

    otlp_endpoint: str = ""
    service_name: str = "mpp-proxy"
    headers: tuple[tuple[str, Secret], ...] = ()


WEBHOOK_EVENTS = ("payment.delivered", "payment.credited", "payment.forfeited", "delivery.failed")


@dataclass(frozen=True, slots=True)
class Webhook:
    """One `[[proxy.webhooks]]` entry: money events POSTed, signed with `secret`."""

    url: str
    secret: Secret
    events: tuple[str, ...] = WEBHOOK_EVENTS


@dataclass(frozen=True, slots=True)
class ObserveSettings:
    """Everything that watches the gateway: metrics, access log, tracing, webhooks."""

    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    tracing: TracingSettings = TracingSettings()
    webhooks: tuple[Webhook, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    """A whole proxy: settings, named payment methods and services, in config order."""

    proxy: ProxySettings
    methods: tuple[PaymentMethod, ...] = ()
    services: tuple[Service, ...] = ()
    source: str = "<memory>"  # file the config came from, for messages
    observe: ObserveSettings = ObserveSettings()

    def method(self, name: str) -> PaymentMethod:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(name)

    def service(self, service_id: str) -> Service:
        for s in self.services:
            if s.id == service_id:
                return s
        raise KeyError(service_id)
