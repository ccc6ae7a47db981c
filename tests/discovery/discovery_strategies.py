"""Hypothesis strategies: random valid configs built from the model dataclasses."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from mpp_proxy.config import check_config
from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import (
    ANY_METHOD,
    HTTP_METHODS,
    RESERVED_SERVICE_IDS,
    BasicAuth,
    BearerAuth,
    Config,
    EvmMethod,
    HeaderAuth,
    PaymentMethod,
    Price,
    ProxySettings,
    Route,
    Secret,
    Service,
    StripeMethod,
    TempoMethod,
    TestMoneyMethod,
)
from mpp_proxy.router import Router

# Lower case only, so a parameter value written in upper case never equals a static segment.
STATIC = st.from_regex(r"[a-z0-9._~{}$-]{1,6}", fullmatch=True).filter(
    lambda s: s not in {".", ".."}
)
PARAM_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,5}", fullmatch=True)
IDENT = st.from_regex(r"[a-z][a-z0-9_-]{0,7}", fullmatch=True)
ADDRESS = st.from_regex(r"0x[0-9a-f]{40}", fullmatch=True)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


def secret_marker(draw: st.DrawFn, markers: list[str]) -> Secret:
    """A secret value that is easy to search for and cannot occur by chance."""
    # Long enough for an HMAC key (32 bytes), which is one of the secrets drawn.
    value = f"SECRET{len(markers)}x{draw(st.integers(10**11, 10**12 - 1))}-{'s' * 16}"
    markers.append(value)
    return Secret(value)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    segments: list[str] = []
    names: set[str] = set()
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            segments.append(draw(STATIC))
        else:
            name = draw(PARAM_NAME.filter(lambda n: n not in names))
            names.add(name)
            segments.append(":" + name)
    ending = draw(st.sampled_from(["", "", "*", "/"]))
    if ending == "*":
        segments.append("*")
    path = "/" + "/".join(segments)
    if ending == "/" and segments:
        path += "/"
    return path


@st.composite
def payment_methods(draw: st.DrawFn, markers: list[str]) -> tuple[PaymentMethod, ...]:
    names = draw(st.lists(IDENT, min_size=1, max_size=3, unique=True))
    methods: list[PaymentMethod] = []
    for name in names:
        kind = draw(st.sampled_from(["tempo", "stripe", "evm", "test"]))
        if kind == "tempo":
            methods.append(
                TempoMethod(
                    name=name,
                    recipient=draw(ADDRESS),
                    currency=draw(ADDRESS),
                    chain_id=draw(st.integers(1, 10**6)),
                    rpc_url=f"https://{secret_marker(draw, markers).value}.example",
                    decimals=draw(st.integers(0, 18)),
                    fee_payer_key=secret_marker(draw, markers),
                )
            )
        elif kind == "stripe":
            methods.append(
                StripeMethod(
                    name=name,
                    secret_key=secret_marker(draw, markers),
                    network_id=draw(IDENT),
                    currency=draw(st.sampled_from(["usd", "eur", "jpy"])),
                    decimals=draw(st.sampled_from([0, 2])),
                    api_base=f"https://{secret_marker(draw, markers).value}.example",
                )
            )
        elif kind == "evm":
            methods.append(
                EvmMethod(
                    name=name,
                    currency=draw(ADDRESS),
                    recipient=draw(ADDRESS),
                    chain_id=draw(st.integers(1, 10**6)),
                    facilitator_url=f"https://u:{secret_marker(draw, markers).value}@f.example",
                    decimals=draw(st.integers(0, 18)),
                )
            )
        else:
            methods.append(TestMoneyMethod(name=name, decimals=draw(st.integers(0, 6))))
    return tuple(methods)


@st.composite
def prices(draw: st.DrawFn, methods: tuple[PaymentMethod, ...]) -> Price | None:
    if draw(st.booleans()):
        return None
    chosen = draw(st.lists(st.sampled_from(methods), min_size=1, unique=True))
    places = draw(st.integers(0, min(m.decimals for m in chosen)))
    units = draw(st.integers(1, 10**12))
    amount = Decimal((0, tuple(int(d) for d in str(units)), -places))
    return Price(amount, tuple(m.name for m in chosen))


@st.composite
def services(
    draw: st.DrawFn, service_id: str, methods: tuple[PaymentMethod, ...], markers: list[str]
) -> Service:
    routes = tuple(
        Route(
            method=draw(st.sampled_from(sorted(HTTP_METHODS | {ANY_METHOD}))),
            pattern=draw(patterns()),
            price=draw(prices(methods)),
            description=draw(TEXT),
            deliver_below=draw(st.sampled_from([300, 400, 500])),
        )
        for _ in range(draw(st.integers(1, 6)))
    )
    auth_kind = draw(st.sampled_from(["bearer", "header", "basic", "none"]))
    auth: Any = None
    if auth_kind == "bearer":
        auth = BearerAuth(secret_marker(draw, markers))
    elif auth_kind == "header":
        auth = HeaderAuth("x-key", secret_marker(draw, markers))
    elif auth_kind == "basic":
        auth = BasicAuth(secret_marker(draw, markers), secret_marker(draw, markers))
    return Service(
        id=service_id,
        base_url=f"https://{secret_marker(draw, markers).value.lower()}.example/base",
        routes=routes,
        title=draw(TEXT),
        description=draw(TEXT),
        auth=auth,
    )


@st.composite
def configs(draw: st.DrawFn) -> tuple[Config, list[str]]:
    """A config the loaders and the router accept, and every secret value it holds."""
    markers: list[str] = []
    methods = draw(payment_methods(markers))
    service_id = IDENT.filter(lambda i: i not in RESERVED_SERVICE_IDS)
    ids = draw(st.lists(service_id, min_size=1, max_size=3, unique=True))
    config = Config(
        proxy=ProxySettings(
            secret_key=secret_marker(draw, markers),
            state=f"redis://:{secret_marker(draw, markers).value}@127.0.0.1:6379/0",
            title=draw(TEXT),
            description=draw(TEXT),
            categories=tuple(draw(st.lists(IDENT, max_size=3))),
        ),
        methods=methods,
        services=tuple(draw(services(sid, methods, markers)) for sid in ids),
    )
    try:
        Router.compile(config.services)
        config = check_config(config)
    except ConfigError:
        assume(False)
    return config, markers
