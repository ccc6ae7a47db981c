"""The demo's upstream: a tiny weather API (one free, one paid-for endpoint) as an ASGI app."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CITIES = {
    "lisbon": "Lisbon",
    "nairobi": "Nairobi",
    "oslo": "Oslo",
    "santiago": "Santiago",
    "tokyo": "Tokyo",
}
_SKIES = ("sunny", "partly cloudy", "cloudy", "light rain", "showers", "windy")


def forecast(city: str, today: date) -> dict[str, Any]:
    """A believable three-day forecast, the same for the same city and day (no randomness)."""
    days = []
    for offset in range(3):
        day = today + timedelta(days=offset)
        seed = hashlib.sha256(f"{city}|{day.isoformat()}".encode()).digest()
        low = seed[0] % 15 + (5 if city != "oslo" else -5)
        days.append(
            {
                "date": day.isoformat(),
                "sky": _SKIES[seed[1] % len(_SKIES)],
                "low_c": low,
                "high_c": low + 4 + seed[2] % 9,
                "rain_mm": round((seed[3] % 60) / 10, 1) if seed[1] % len(_SKIES) > 2 else 0.0,
            }
        )
    return {"city": CITIES[city], "days": days, "source": "demo-weather"}


def _json(status: int, doc: Any) -> tuple[int, bytes]:
    return status, orjson.dumps(doc)


def respond(method: str, path: str) -> tuple[int, bytes]:
    """(status, JSON body) for one request; pure, so the demo's answers are predictable."""
    if method not in ("GET", "HEAD"):
        return _json(405, {"error": "method not allowed"})
    if path == "/v1/cities":
        return _json(200, {"cities": sorted(CITIES)})
    prefix = "/v1/forecast/"
    if path.startswith(prefix):
        city = path[len(prefix) :].lower()
        if city in CITIES:
            return _json(200, forecast(city, datetime.now(UTC).date()))
        return _json(404, {"error": f"unknown city {city!r}", "cities": sorted(CITIES)})
    return _json(404, {"error": "not found"})


async def weather_app(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI entry point. Logs nothing: the demo narrates from the client side."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass  # the demo API takes no bodies; drain whatever came
    status, body = respond(scope["method"], scope["path"])
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
