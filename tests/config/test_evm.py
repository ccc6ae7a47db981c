"""EVM methods are fully described by config: the EIP-712 domain (TOML and Python), settle=."""

from __future__ import annotations

from typing import Any

import pytest
from config_samples import RECIPIENT, Writer

from mpp_proxy.config import ConfigError, EvmMethod, load_config
from mpp_proxy.config.methods import evm
from mpp_proxy.payments import PaymentGate
from mpp_proxy.state import open_store

# A token pympp does not know: it needs its EIP-712 domain spelled out.
TOKEN = "0x2222222222222222222222222222222222222222"
EVM_TOML = f"""
[proxy]
secret_key = "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
[methods.eusd]
kind = "evm"
currency = "{TOKEN}"
recipient = "{RECIPIENT}"
chain_id = 31337
facilitator_url = "https://facilitator.example.com"
{{extra}}
[services.api]
base_url = "https://api.example.com"
[services.api.routes]
"GET /x" = {{{{ price = "0.05" }}}}
"""
DOMAIN = 'eip712_name = "Euro Stable"\neip712_version = "2"'


def settle(authorization: Any) -> str:
    return "0x" + "00" * 32


def test_toml_sets_the_eip712_domain(write: Writer) -> None:
    method = load_config(write(EVM_TOML.format(extra=DOMAIN)), {}).methods[0]
    assert isinstance(method, EvmMethod)
    assert (method.eip712_name, method.eip712_version) == ("Euro Stable", "2")


def test_python_builder_sets_the_eip712_domain_and_settle() -> None:
    method = evm(
        "eusd",
        currency=TOKEN,
        recipient=RECIPIENT,
        chain_id=31337,
        eip712_name="Euro Stable",
        eip712_version="2",
        settle=settle,
    )
    assert (method.eip712_name, method.eip712_version, method.settle) == (
        "Euro Stable",
        "2",
        settle,
    )
    assert "settle" not in repr(method)


def test_toml_and_python_evm_methods_are_equal(write: Writer) -> None:
    loaded = load_config(write(EVM_TOML.format(extra=DOMAIN)), {}).methods[0]
    built = evm(
        "eusd",
        currency=TOKEN,
        recipient=RECIPIENT,
        chain_id=31337,
        facilitator_url="https://facilitator.example.com",
        eip712_name="Euro Stable",
        eip712_version="2",
    )
    assert loaded == built


def test_gate_builds_an_unknown_token_from_a_toml_domain(write: Writer) -> None:
    config = load_config(write(EVM_TOML.format(extra=DOMAIN)), {})
    PaymentGate(config, open_store("memory://"))


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ('eip712_name = "Euro Stable"', "eip712_version", "together"),
        ('eip712_version = "2"', "eip712_name", "together"),
        ('eip712_name = ""\neip712_version = "2"', "eip712_name", "empty"),
        ("eip712_version = 2\neip712_name = 'E'", "eip712_version", "string"),
        ('settle = "my.module:settle"', "settle", "proxy.py"),
    ],
)
def test_bad_evm_keys_name_the_key(write: Writer, extra: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(EVM_TOML.format(extra=extra)), {})
    assert info.value.key == f"methods.eusd.{key}"
    assert problem in info.value.problem


def test_settle_must_be_callable() -> None:
    with pytest.raises(ConfigError) as info:
        evm(
            "eusd",
            currency=TOKEN,
            recipient=RECIPIENT,
            chain_id=1,
            settle="0xhash",  # type: ignore[arg-type]
        )
    assert info.value.key == "methods.eusd.settle" and "callable" in info.value.problem


def test_evm_without_facilitator_or_settle_fails_at_load(write: Writer) -> None:
    text = EVM_TOML.format(extra="").replace(
        'facilitator_url = "https://facilitator.example.com"', ""
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(text), {})
    assert info.value.key == "methods.eusd.facilitator_url"
    assert "settle" in info.value.problem
