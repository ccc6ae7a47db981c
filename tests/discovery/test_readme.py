"""docs/readme/discovery.md shows real output: its llms.txt lines and offers come from the code."""

from __future__ import annotations

import json
from pathlib import Path

from discovery_samples import known_config

from mpp_proxy.discovery import llms_txt, openapi_document

README = Path(__file__).parents[2] / "docs" / "readme" / "discovery.md"


def test_llms_lines_in_the_readme_are_real_output() -> None:
    text = README.read_text(encoding="utf-8")
    example = text.split("```markdown\n", 1)[1].split("```", 1)[0].splitlines()
    produced = llms_txt(known_config()).splitlines()
    assert example and all(line in produced for line in example)


def test_offers_in_the_readme_are_real_output() -> None:
    text = README.read_text(encoding="utf-8")
    snippet = text.split("```json\n", 1)[1].split('"x-mpp-offers"', 1)[0].strip().rstrip(",")
    shown = json.loads("{" + snippet + "}")["x-payment-info"]
    op = openapi_document(known_config())["paths"]["/openai/v1/chat/completions"]["post"]
    assert shown == op["x-payment-info"]
