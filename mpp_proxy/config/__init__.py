"""Configuration: the model, its two loaders (TOML and Python), presets and auth helpers."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from mpp_proxy.config.auth import auth_headers, basic, bearer, header
from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.limits import rate_limit, spend_cap
from mpp_proxy.config.model import (
    ANY_METHOD,
    HTTP_METHODS,
    RESERVED_SERVICE_IDS,
    AdminSettings,
    Auth,
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
    Timeouts,
)
from mpp_proxy.config.python_api import (
    Charge,
    admin,
    charge,
    check_config,
    config_warnings,
    env,
    free,
    make_config,
    test_methods_not_allowed,
)

__all__ = [
    "ANY_METHOD",
    "HTTP_METHODS",
    "RESERVED_SERVICE_IDS",
    "AdminSettings",
    "Auth",
    "BasicAuth",
    "BearerAuth",
    "Charge",
    "Config",
    "ConfigError",
    "EvmMethod",
    "HeaderAuth",
    "PaymentMethod",
    "Price",
    "ProxySettings",
    "Route",
    "Secret",
    "Service",
    "StripeMethod",
    "TempoMethod",
    "TestMoneyMethod",
    "Timeouts",
    "admin",
    "auth_headers",
    "basic",
    "bearer",
    "charge",
    "check_config",
    "config_warnings",
    "env",
    "free",
    "header",
    "load_config",
    "make_config",
    "rate_limit",
    "spend_cap",
    "test_methods_not_allowed",
]


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """The checked Config in a `.toml` or `.py` file; ConfigError names whatever is wrong."""
    file = Path(path)
    env_map: Mapping[str, str] = os.environ if environ is None else environ
    if file.suffix == ".toml":
        from mpp_proxy.config.toml_loader import load_toml

        return load_toml(file, env_map)
    if file.suffix == ".py":
        from mpp_proxy.config.python_loader import load_python

        return load_python(file, env_map)
    raise ConfigError("a config file ends in .toml or .py", file=str(path))
