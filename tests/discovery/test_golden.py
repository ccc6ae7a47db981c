"""Golden files: both documents for the known config (MPP_UPDATE_GOLDEN=1 rewrites them)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from discovery_samples import known_config

from mpp_proxy import __version__
from mpp_proxy.discovery import llms_txt, openapi_document

GOLDEN = Path(__file__).parent / "golden"


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("MPP_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    if not path.exists():
        pytest.fail(f"{path} is missing; run with MPP_UPDATE_GOLDEN=1 to write it")
    assert text == path.read_text(encoding="utf-8"), (
        f"{name} changed; review the diff and rerun with MPP_UPDATE_GOLDEN=1 if it is intended"
    )


def test_openapi_document_matches_golden_file() -> None:
    document = openapi_document(known_config(), version=__version__)
    _check("openapi.json", json.dumps(document, indent=2, sort_keys=True) + "\n")


def test_llms_txt_matches_golden_file() -> None:
    _check("llms.txt", llms_txt(known_config()))
