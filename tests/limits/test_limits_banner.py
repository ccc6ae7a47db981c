"""The banner says where limits are counted and shared, what they do when the store fails,
that capacity is per worker, and how the client address is found; each route's own limits."""

from __future__ import annotations

from pathlib import Path

from limits_support import PAID, proxy_toml

from mpp_proxy.cli.banner import Listener, render_banner
from mpp_proxy.config import load_config

ROUTES = "\n".join(
    [
        '"GET /models" = { limits = [{ rate = "10/second" }] }',
        f'"POST /chat" = {{ {PAID}, '
        'limits = [{ rate = "60/minute", burst = 10, key = "payer" }], '
        'max_spend = { amount = "5.00", per = "day" } }',
        '"GET /plain" = "free"',
    ]
)


def banner(tmp_path: Path, text: str, workers: int = 1) -> list[str]:
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    config = load_config(path, {})
    return render_banner(config, Listener("127.0.0.1", 4402, workers)).splitlines()


def section(lines: list[str]) -> list[str]:
    start = lines.index("limits")
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def test_routes_show_their_own_limits_and_services_their_capacity(tmp_path: Path) -> None:
    service = 'max_in_flight = 8\nqueue = 4\nshed_above = "5s"\nlimits = [{ rate = "100/minute" }]'
    lines = banner(tmp_path, proxy_toml(ROUTES, url="http://127.0.0.1:9", service=service))
    text = "\n".join(lines)
    assert "    limits (whole service): 100/minute by ip" in lines
    assert (
        "    capacity: 8 in flight, 4 queued up to 2 s; sheds load while the upstream's p90 is "
        "over 5 s"
    ) in lines
    models = lines.index(next(line for line in lines if "GET /api/models" in line))
    assert lines[models + 1] == "      limits: 10/second by ip"
    assert (
        "      limits: 60/minute by payer, 10 at once; at most 5.00 TEST per day by payer" in text
    )
    plain = lines.index(next(line for line in lines if "GET /api/plain" in line))
    assert not lines[plain + 1].startswith("      limits")


def test_on_sqlite_with_two_workers_the_limit_is_shared_and_capacity_is_per_worker(
    tmp_path: Path,
) -> None:
    service = "max_in_flight = 8"
    text = proxy_toml(ROUTES, url="http://a", service=service, state="sqlite:///s.db")
    got = section(banner(tmp_path, text, workers=2))
    assert got[1].startswith("  counters   in the SQLite file, shared by every worker process")
    assert got[2] == "  store down paid routes refuse (503), free routes let requests through"
    assert got[3] == (
        "  capacity   in-flight caps and shedding count per worker process "
        "(with 2 workers, each cap 2 times over)"
    )
    assert got[4].startswith("  client     the peer address")


def test_redis_store_errors_as_set_and_the_trusted_proxies(tmp_path: Path) -> None:
    routes = ROUTES.replace(
        '"GET /models" = { limits = [{ rate = "10/second" }] }',
        '"GET /models" = { limits = [{ rate = "10/second" }], on_store_error = "closed" }',
    )
    text = proxy_toml(
        routes,
        url="http://a",
        state="redis://127.0.0.1:6379/0",
        proxy='trusted_proxies = ["10.0.0.0/8"]\nforwarded_header = "forwarded"',
    )
    got = section(banner(tmp_path, text))
    assert got[1] == "  counters   in Redis, shared by every worker and every instance on it"
    assert got[2].endswith("; set: api GET /models: closed")
    assert got[3] == (
        "  client     the rightmost Forwarded hop not in 10.0.0.0/8 when the peer is one of "
        "them, else the peer"
    )


def test_memory_state_never_fails_and_no_limits_means_no_section(tmp_path: Path) -> None:
    got = section(banner(tmp_path, proxy_toml(ROUTES, url="http://a")))
    assert got[1] == "  counters   in this process (memory://)"
    assert got[2] == "  store down never (counted in memory)"
    plain = banner(tmp_path, proxy_toml('"GET /x" = "free"', url="http://a"))
    assert "limits" not in plain
