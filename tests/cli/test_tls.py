"""`serve --tls-cert --tls-key`: granian serves HTTPS with the operator's certificate; plain HTTP
to that port fails cleanly; bad TLS files are one line naming the file, exit 2."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from cli_harness import run_cli

from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream

CONFIG = """
[proxy]
secret_key = "{secret}"
state = "sqlite:///{state}"

[services.svc]
base_url = "{upstream}"

[services.svc.routes]
"GET /echo/free" = "free"
"""


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def tls_files(ca: trustme.CA, tmp_path: Path) -> tuple[str, str]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    for pem in cert.cert_chain_pems[1:]:
        with (tmp_path / "cert.pem").open("ab") as chain:
            chain.write(pem.bytes())
    return str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")


def config(tmp_path: Path, upstream: Upstream) -> str:
    path = tmp_path / "proxy.toml"
    state = tmp_path / "state.db"
    path.write_text(CONFIG.format(secret="t" * 40, state=state, upstream=upstream.url))
    return str(path)


@pytest.fixture
def https_url(
    serve: Callable[..., ProxyProcess], ca: trustme.CA, tmp_path: Path, upstream: Upstream
) -> str:
    cert, key = tls_files(ca, tmp_path)
    served = serve("--config", config(tmp_path, upstream), "--tls-cert", cert, "--tls-key", key)
    return served.banner_url()


def test_https_with_the_operators_certificate(
    https_url: str, ca: trustme.CA, tmp_path: Path
) -> None:
    assert https_url.startswith("https://127.0.0.1:")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    trusted = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    with httpx.Client(base_url=https_url, verify=trusted) as client:
        assert client.get("/healthz").status_code == 200
        echoed = client.get("/svc/echo/free?x=1")
    assert echoed.status_code == 200
    assert echoed.json()["query"] == "x=1"


def test_tls_12_clients_are_served_too(https_url: str, ca: trustme.CA) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with httpx.Client(base_url=https_url, verify=context) as client:
        assert client.get("/healthz").status_code == 200


def test_an_untrusted_client_is_refused(https_url: str) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https_url}/healthz")


def test_plain_http_to_the_tls_port_fails_cleanly(https_url: str, ca: trustme.CA) -> None:
    port = int(https_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):  # the server closes: no hang, no HTTP answer
            answer += chunk
    assert b"HTTP/1.1" not in answer
    # ...and it goes on serving HTTPS.
    context = ssl.create_default_context()
    ca.configure_trust(context)
    assert httpx.get(f"{https_url}/healthz", verify=context).status_code == 200


def test_a_certificate_without_its_key_is_refused(tmp_path: Path, upstream: Upstream) -> None:
    result = run_cli("serve", "--config", config(tmp_path, upstream), "--tls-cert", "cert.pem")
    assert result.code == 2
    assert result.err.strip() == (
        "mpp-proxy: --tls-cert and --tls-key go together; "
        "pass both: the PEM certificate chain and its private key"
    )


def test_a_missing_certificate_file_is_named(tmp_path: Path, upstream: Upstream) -> None:
    missing = str(tmp_path / "nope.pem")
    args = ["--tls-cert", missing, "--tls-key", missing]
    result = run_cli("serve", "--config", config(tmp_path, upstream), *args)
    assert result.code == 2
    assert result.err.strip() == f"mpp-proxy: TLS certificate not found: {missing}"


def test_a_key_that_does_not_match_the_certificate_is_refused(
    ca: trustme.CA, tmp_path: Path, upstream: Upstream
) -> None:
    cert, _ = tls_files(ca, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, key = tls_files(trustme.CA(), other)
    result = run_cli(
        "serve", "--config", config(tmp_path, upstream), "--tls-cert", cert, "--tls-key", key
    )
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"mpp-proxy: TLS certificate {cert} and key {key} do not load (")
    assert "KEY_VALUES_MISMATCH" in lines[0]


def test_an_encrypted_key_is_refused_without_prompting(
    ca: trustme.CA, tmp_path: Path, upstream: Upstream
) -> None:
    from cryptography.hazmat.primitives import serialization

    cert, key = tls_files(ca, tmp_path)
    loaded = serialization.load_pem_private_key(Path(key).read_bytes(), password=None)
    Path(key).write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    result = run_cli(
        "serve", "--config", config(tmp_path, upstream), "--tls-cert", cert, "--tls-key", key
    )
    assert result.code == 2
    assert result.err.strip() == (
        f"mpp-proxy: TLS key {key} is encrypted; "
        "pass the private key unencrypted (readable by this user only)"
    )
