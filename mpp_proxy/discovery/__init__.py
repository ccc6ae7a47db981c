"""Discovery: pure functions from the config to /openapi.json (OpenAPI 3.1) and /llms.txt."""

from __future__ import annotations

from mpp_proxy.discovery.llms import llms_txt
from mpp_proxy.discovery.openapi import openapi_document

__all__ = ["llms_txt", "openapi_document"]
