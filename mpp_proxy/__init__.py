"""mpp-proxy: a payment gateway that makes any HTTP API payable per call over HTTP 402 (MPP).

The public API is loaded lazily so that `import mpp_proxy` stays cheap and `mpp_proxy:app` (for
`granian --interface asgi mpp_proxy:app`) is only built, from `MPP_PROXY_CONFIG`, when asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Proxy": ("mpp_proxy.core", "Proxy"),
    "Config": ("mpp_proxy.config.model", "Config"),
    "ConfigError": ("mpp_proxy.config.errors", "ConfigError"),
    "load_config": ("mpp_proxy.config", "load_config"),
    "services": ("mpp_proxy.config.presets", None),
    "methods": ("mpp_proxy.config.methods", None),
    "charge": ("mpp_proxy.config.python_api", "charge"),
    "free": ("mpp_proxy.config.python_api", "free"),
    "rate_limit": ("mpp_proxy.config.limits", "rate_limit"),
    "spend_cap": ("mpp_proxy.config.limits", "spend_cap"),
    "env": ("mpp_proxy.config.python_api", "env"),
}

__all__ = ["__version__", "app", *_EXPORTS]

_app: Any = None


def _build_app() -> Any:
    import os

    from mpp_proxy.config import load_config
    from mpp_proxy.core import Proxy

    path = os.environ.get("MPP_PROXY_CONFIG")
    if not path:
        raise RuntimeError(
            "mpp_proxy:app needs MPP_PROXY_CONFIG set to the path of a proxy.toml or proxy.py"
        )
    config = load_config(path)
    if config.proxy.admin is None:
        return Proxy(config)
    from mpp_proxy.cli.reload import reload_hook

    return Proxy(config, reload=reload_hook(path))


def __getattr__(name: str) -> Any:
    global _app
    if name == "app":
        if _app is None:
            _app = _build_app()
        return _app
    try:
        module_name, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'mpp_proxy' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    return module if attr is None else getattr(module, attr)
