"""What the deploy guides must agree on: the image's contract, the drain timings, the secrets."""

from __future__ import annotations

import re
import tomllib
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "docs" / "deploy"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

# serve's defaults, which every guide keeps: SIGTERM drains 5 s, in-flight requests get 30 s.
DRAIN_SECONDS = 5
GRACEFUL_TIMEOUT = 30

# The values the example configs read from the environment (fake, but well-formed).
SECRETS = {
    "MPP_SECRET_KEY": "k" * 48,
    "RECIPIENT_ADDRESS": "0x" + "ab" * 20,
    "OPENAI_API_KEY": "sk-test-deploy-guides",
}


def dockerfile_runtime() -> dict[str, str]:
    """USER, WORKDIR, VOLUME, EXPOSE and the ENV of the Dockerfile's last stage."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    last = text[text.rindex("\nFROM ") :]
    found: dict[str, str] = {}
    for line in last.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word in ("USER", "WORKDIR", "EXPOSE"):
            found[word] = rest.strip()
        elif word == "VOLUME":
            found[word] = rest.strip().strip('[]"')
        elif word == "ENV":
            found.update(re.findall(r"(\w+)=(\S+)", rest))
    return found


def serve_args_timings(args: list[str]) -> tuple[float, float]:
    """--drain-seconds and --graceful-timeout from a serve command line (defaults if absent)."""
    drain, graceful = float(DRAIN_SECONDS), float(GRACEFUL_TIMEOUT)
    for flag, value in pairwise(args):
        if flag == "--drain-seconds":
            drain = float(value)
        elif flag == "--graceful-timeout":
            graceful = float(value)
    return drain, graceful
