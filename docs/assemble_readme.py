"""Writes README.md from the section sources in docs/readme/ (run by `make readme`)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ROOT / "docs" / "readme"
# Reading order: try it, configure it, run it, then how each part behaves.
ORDER = [
    "quickstart",
    "config",
    "cli",
    "router",
    "core",
    "payments",
    "limits",
    "security",
    "state",
    "discovery",
    "benchmarks",
    "e2e",
]

HEAD = """# mpp-proxy

mpp-proxy is a payment gateway you put in front of any HTTP API (OpenAI, Anthropic, Stripe, your
own service): callers, mostly AI agents, pay per call over HTTP 402 with the Machine Payments
Protocol (MPP), in crypto on Tempo or by card through Stripe. You write one config file and run
one command; there is no application code, and the upstream API key never leaves the gateway.
It is a raw ASGI app served by granian, streams bodies both ways, and never loses a payment: when
the upstream fails after a caller paid, the payment becomes a credit the same credential redeems.

## Two commands

```sh
make demo    # installs everything, runs a proxy, a demo API and a paying client, offline
make test    # installs everything (venv, anvil from npm, redis-server), lint + types + all tests
```

Both work on a fresh machine with Python 3.11+, pip, make and npm; `make test` installs
`redis-server` with apt when it is missing. Everything else below uses what these installed
(`.venv/bin/mpp-proxy`).

"""


def _shift(text: str, level_of_top: int = 2) -> str:
    """Move the part's headings so its first heading gets `level_of_top`; code fences stay."""
    lines = text.splitlines()
    top = None
    fenced = False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            top = len(line) - len(line.lstrip("#"))
            break
    delta = level_of_top - (top or level_of_top)
    out: list[str] = []
    fenced = False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#+ ", line):
            level = len(line) - len(line.lstrip("#"))
            line = "#" * max(level_of_top, level + delta) + line[level:]
        out.append(line)
    # Links between parts point at the part files, which stay in the repository.
    return re.sub(r"\]\(([a-z0-9-]+\.md)\)", r"](docs/readme/\1)", "\n".join(out))


def main() -> None:
    parts = [HEAD]
    for name in ORDER:
        parts.append(_shift((PARTS / f"{name}.md").read_text()).rstrip() + "\n")
        if name == "benchmarks":
            table = ROOT / "benchmarks" / "results" / "latest.md"
            if table.exists():
                parts.append(_shift(table.read_text(), 3).rstrip() + "\n")
    (ROOT / "README.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
