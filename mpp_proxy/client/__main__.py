"""`python -m mpp_proxy.client address`: the account address of $MPP_PRIVATE_KEY."""

from __future__ import annotations

import os
import sys

from mpp_proxy.client.methods import PRIVATE_KEY_ENV, InvalidKey, address_of


def main(argv: list[str]) -> int:
    if argv != ["address"]:
        print("usage: python -m mpp_proxy.client address", file=sys.stderr)
        return 2
    key = os.environ.get(PRIVATE_KEY_ENV, "").strip()
    if not key:
        print(f"${PRIVATE_KEY_ENV} is not set: export the payer's private key", file=sys.stderr)
        return 2
    try:
        print(address_of(key))
    except InvalidKey as exc:
        print(f"${PRIVATE_KEY_ENV}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
