"""Payment challenges made by hand, for tests that read offers the way a client does."""

from __future__ import annotations

from mpp import Challenge

# USDC on Tempo, and anvil's first development key (public knowledge, holds nothing real).
USDC = "0x20C000000000000000000000b9537d11c60E8b50"
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def challenge_header(
    method: str, request: dict[str, object], realm: str = "api.example.com"
) -> str:
    """A `WWW-Authenticate: Payment` value for one charge challenge of `method`."""
    challenge = Challenge.create(
        secret_key="s", realm=realm, method=method, intent="charge", request=request
    )
    return str(challenge.to_www_authenticate(realm))
