"""The configuration model: frozen dataclasses that every loader produces and every stage reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

RESERVED_SERVICE_IDS = frozenset(
    {"llms.txt", "openapi.json", "healthz", "readyz", "metrics", "admin"}
)

# When a payment settles: "after" the upstream answered with success, or "before" forwarding.
SETTLE_TIMINGS = ("after", "before")
# What a settled payment whose request was not delivered becomes: a credit, or a refund.
ON_FAILURE = ("credit", "refund")

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
    # "after" or "before"; None: after (pull-mode credentials validate without settling).
    settlement: str | None = None
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
    # Shared payment tokens cannot be checked without charging them: always settled before.
    settlement: str | None = None
    # A charged request that was not delivered: kept as a "credit" or refunded ("refund").
    on_failure: str = "credit"
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
    # "after" or "before"; None: after (an authorization is checked without settling it). Kept
    # out of repr like `settle`: a repr names no settlement detail of this method.
    settlement: str | None = field(default=None, repr=False)
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
    # As many as USDC and TIP-20 tokens: any price a Tempo or EVM method takes works here too.
    decimals: int = 6
    settlement: str | None = None  # None: after
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
class PriceTier:
    """Requests whose measured value is at most `upto` pay `amount`."""

    upto: Decimal
    amount: Decimal


# Where a price rule reads its input: a JSON body field, a query parameter, the body size.
PRICE_SOURCES = ("json:<field>", "query:<name>", "size")


@dataclass(frozen=True, slots=True)
class PriceRule:
    """A price computed from the request: a `table` of values or numeric `tiers`.

    `source` is `json:<field>` (a dotted path into a JSON body), `query:<name>` or `size` (body
    bytes). `default` pays for values the table or the tiers do not name; without it such a
    request is refused (400).
    """

    source: str
    table: tuple[tuple[str, Decimal], ...] = ()
    tiers: tuple[PriceTier, ...] = ()
    default: Decimal | None = None

    @property
    def amounts(self) -> tuple[Decimal, ...]:
        """Every price the rule can charge, lowest first."""
        found = {a for _, a in self.table} | {t.amount for t in self.tiers}
        if self.default is not None:
            found.add(self.default)
        return tuple(sorted(found))

    @property
    def body_field(self) -> str | None:
        """The JSON field path when the price comes from the body's JSON, else None."""
        return self.source[5:] if self.source.startswith("json:") else None


@dataclass(frozen=True, slots=True)
class Price:
    """A charge in the currency's display unit ("0.05"), offered through the named methods.

    With a `rule` the price depends on the request and `amount` is the lowest it can be.
    """

    amount: Decimal
    pay_with: tuple[str, ...]
    rule: PriceRule | None = None


# ---------------------------------------------------------------------------- limits

# The key kinds a limit counts by; a header key is written "header:<name>".
LIMIT_KEYS = ("ip", "payer", "route")
HEADER_KEY = "header:"
# The windows a spend cap counts in (UTC calendar units).
SPEND_WINDOWS = ("minute", "hour", "day", "week", "month")
STORE_ERROR_MODES = ("closed", "open")
FORWARDED_HEADERS = ("x-forwarded-for", "forwarded")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `count` requests per `period` seconds and `burst` at once, counted per `key`."""

    count: int
    period: float
    burst: int  # how many may arrive at once from a full bucket (by default `count`)
    key: str  # "ip" | "payer" | "route" | "header:<lower-case name>"
    name: str = ""  # the policy name clients see in RateLimit fields; "" = derived from key
    rate: str = ""  # as written ("60/minute"), for messages, the banner and discovery


@dataclass(frozen=True, slots=True)
class SpendCap:
    """At most `amount` (display units) of delivered payments in `currency` per `per` window."""

    amount: Decimal
    per: str  # one of SPEND_WINDOWS
    key: str = "payer"
    # As written: a method's currency or a method name; at load, the method's own currency.
    currency: str | None = None
    decimals: int | None = None  # of that currency, filled in at load


@dataclass(frozen=True, slots=True)
class Limits:
    """A route's or a service's limits, decided before payment (the admit stage)."""

    rates: tuple[RateLimit, ...] = ()
    spend: tuple[SpendCap, ...] = ()
    # What a limit does when its shared store fails; None: closed on paid routes, open on free.
    on_store_error: str | None = None
    # RateLimit fields on allowed responses; None: as the service says (on by default).
    headers: bool | None = None

    @property
    def empty(self) -> bool:
        return not self.rates and not self.spend


@dataclass(frozen=True, slots=True)
class Capacity:
    """A service's concurrency cap and load shedding, per worker process."""

    max_in_flight: int | None = None
    queue: int = 0  # requests that may wait for a slot beyond max_in_flight
    queue_timeout: float = 2.0
    # Shed new requests while the recent upstream response time (p90) is above this.
    shed_above: float | None = None

    @property
    def empty(self) -> bool:
        return self.max_in_flight is None and self.shed_above is None


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
    limits: Limits = Limits()
    # "after" | "before"; None: each method's own timing.
    settle: str | None = None
    # "credit" | "refund" (Stripe); None: each method's own.
    on_failure: str | None = None

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
    limits: Limits = Limits()
    capacity: Capacity = Capacity()


# ---------------------------------------------------------------------------- proxy


# Who may reach the admin API and /metrics unless `allow` says otherwise: this machine only.
LOOPBACK = ("127.0.0.1/32", "::1/128")


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The `[proxy.admin]` table: the admin API is served only when it is set."""

    bearer_token: Secret
    # Addresses the admin API answers (CIDRs); anyone else gets 404, as without a token.
    allow: tuple[str, ...] = LOOPBACK


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
    # Peers (networks, normalised) whose forwarding header names the client; () trusts none.
    trusted_proxies: tuple[str, ...] = ()
    # The header those proxies write: "x-forwarded-for" or "forwarded" (RFC 7239).
    forwarded_header: str = "x-forwarded-for"
    # A delivered paid request re-sent with its Idempotency-Key is answered from the stored
    # response for this long; bodies up to replay_max_bytes are kept.
    replay_ttl: float = 86400.0
    replay_max_bytes: int = 1024 * 1024
    # The admin API (/admin/*); None: off.
    admin: AdminSettings | None = None


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """`[proxy.metrics]`: the Prometheus exposition and who may read it.

    A scrape is answered when the client's address is in `allow` or it presents `bearer_token`
    (either suffices when both are set); anyone else gets 404 as if the path did not exist.
    """

    enabled: bool = True
    path: str = "/metrics"
    allow: tuple[str, ...] = LOOPBACK
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


WEBHOOK_EVENTS = (
    "payment.delivered",
    "payment.credited",
    "payment.refunded",
    "payment.settle_failed",
    "payment.forfeited",
    "payment.voided",
    "delivery.failed",
)


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
