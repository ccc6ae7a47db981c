"""nginx configs: the fixed-body upstream every proxy forwards to, and the nginx anchor proxy."""

from __future__ import annotations

import os
from pathlib import Path

# Exactly 100 bytes of JSON, the "small GET" body.
SMALL_BODY = '{"id":"bench","object":"item","ok":true,"data":"' + "x" * 50 + '"}'
assert len(SMALL_BODY) == 100
MID_BYTES = 64 * 1024
BIG_BYTES = 1024 * 1024
UPLOAD_BYTES = 256 * 1024
PAID_BODY = '{"paid":true}'


def file_body(size: int) -> bytes:
    """The bytes of the upstream's fixed files (~/64k, ~/big): 0..255 repeated."""
    return bytes(range(256)) * (size // 256)


# What the upstream answers on each GET path, with its content type: the fixed-response peer
# (peers/granian_fixed.py) answers the same bytes.
FIXED_GETS: dict[str, tuple[str, bytes]] = {
    "/small": ("application/json", SMALL_BODY.encode()),
    "/64k": ("application/octet-stream", file_body(MID_BYTES)),
    "/big": ("application/octet-stream", file_body(BIG_BYTES)),
}


def _common(prefix: Path, name: str) -> str:
    # As root, nginx workers would drop to nobody and could not read our 0700 temp directory
    # nor write their temp files there.
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/{name}.pid;
error_log {prefix}/{name}-error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
"""


def _http_common(prefix: Path, name: str) -> str:
    temp = prefix / f"{name}-tmp"
    temp.mkdir(parents=True, exist_ok=True)
    return f"""
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
"""


def upstream_conf(prefix: Path, port: int, sse_port: int) -> Path:
    """The upstream: ~/small, ~/64k, ~/big, ~/upload (POST sink), ~/paid, ~/sse, stub_status.

    Locations match on the path's end so every proxy can forward its own prefix unchanged.
    """
    www = prefix / "www"
    www.mkdir(parents=True, exist_ok=True)
    (www / "64k.bin").write_bytes(FIXED_GETS["/64k"][1])
    (www / "big.bin").write_bytes(FIXED_GETS["/big"][1])
    conf = prefix / "upstream.conf"
    conf.write_text(
        _common(prefix, "upstream")
        + f"""
http {{
{_http_common(prefix, "upstream")}
    upstream sse_events {{ server 127.0.0.1:{sse_port}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        default_type application/json;
        location = /nginx_status {{ stub_status; }}
        location ~ /small$ {{ return 200 '{SMALL_BODY}'; }}
        location ~ /paid$ {{ return 200 '{PAID_BODY}'; }}
        location ~ /64k$ {{
            root {www};
            default_type application/octet-stream;
            try_files /64k.bin =404;
        }}
        location ~ /big$ {{
            root {www};
            default_type application/octet-stream;
            try_files /big.bin =404;
        }}
        location ~ /upload$ {{
            # `return` reads and discards the request body, then answers on a kept-alive connection.
            client_max_body_size 1m;
            client_body_buffer_size 512k;
            return 200 '{{"received":true}}';
        }}
        location ~ /sse$ {{
            # nginx cannot pace events; peers/sse_upstream.py streams them one write each.
            proxy_pass http://sse_events;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            add_header X-Accel-Buffering no;
        }}
    }}
}}
"""
    )
    return conf


def reverse_proxy_conf(prefix: Path, port: int, upstream_port: int) -> Path:
    """nginx as a reverse proxy with a keep-alive upstream pool, as the nginx docs configure it."""
    conf = prefix / "nginx-rp.conf"
    conf.write_text(
        _common(prefix, "nginx-rp")
        + f"""
http {{
{_http_common(prefix, "nginx-rp")}
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 1m;
        client_body_buffer_size 512k;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    )
    return conf
