"""URL redaction for anything the CLI prints: no userinfo, no password, no query values."""

from __future__ import annotations

from urllib.parse import urlsplit


def public_url(url: str) -> str:
    """`url` without userinfo; a query string (which may hold a key) is shown as `?...`.

    Anything that does not parse as a URL is replaced entirely rather than risk printing a secret.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    query = "?..." if parts.query else ""
    # Built by hand: urlunsplit drops the empty authority of `sqlite:///path`.
    return f"{parts.scheme}://{netloc}{parts.path}{query}"
