"""Well-known token contracts and their symbols: facts the gateway and its clients both print.

Imports nothing of ours, so `mpp_proxy.client` (which imports nothing of the server side) and
the discovery documents can share it.
"""

from __future__ import annotations

__all__ = ["token_symbol"]

# Well-known token contracts (lower-case address -> symbol), so llms.txt and a client's receipts
# can say "0.05 USDC" instead of a 42-character address. Unknown tokens are shown by address.
_TOKEN_SYMBOLS = {
    # Tempo TIP-20 tokens (same addresses on mainnet and Moderato).
    "0x20c0000000000000000000000000000000000000": "pathUSD",
    "0x20c000000000000000000000b9537d11c60e8b50": "USDC",
    "0x20c0000000000000000000006a37da5c996874be": "OUSD",
    # EVM USDC deployments pympp knows.
    "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913": "USDC",  # Base
    "0x036cbd53842c5426634e7929541ec2318f3dcf7e": "USDC",  # Base Sepolia
    "0xceba9300f2b948710d2653dd7b07f33a8b32118c": "USDC",  # Celo
    "0x48065fbbe25f71c9282ddf5e1cd6d6a887483d5e": "USDT",  # Celo
}


def token_symbol(currency: str) -> str:
    """A well-known token's symbol ("USDC"), else `currency` as given."""
    return _TOKEN_SYMBOLS.get(currency.lower(), currency)
