"""The paying side and the served proxies of the e2e tests (imported by conftest and tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from mpp import Challenge
from mpp.methods.evm import client as evm_client
from mpp.methods.stripe import client as stripe_client
from mpp.runtime import ClientMethod, CredentialParams

from mpp_proxy.client import testmoney
from tests.e2e.harness import EVM_CHAIN_ID, EVM_DOMAIN, EVM_TOKEN, proxy_py, run
from tests.support.anvil import Anvil, FreshPayer
from tests.support.fake_stripe import FakeStripe
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream


@dataclass(frozen=True)
class Deployment:
    """A running proxy process and where its state and EVM settlements go."""

    process: ProxyProcess
    state: str
    settled: Path

    @property
    def url(self) -> str:
        return self.process.url


def serve_py(
    folder: Path,
    *,
    chain: Anvil,
    echo: Upstream,
    openai_upstream: OpenAIUpstream,
    stripe_url: str,
    **options: float | str | None,
) -> Deployment:
    folder.mkdir(parents=True, exist_ok=True)
    state = f"sqlite:///{folder / 'state.db'}"
    settled = folder / "evm-settled.jsonl"
    config = folder / "proxy.py"
    config.write_text(
        proxy_py(
            state=state,
            echo_url=echo.url,
            openai_url=openai_upstream.url,
            rpc_url=chain.rpc_url,
            stripe_url=stripe_url,
            settled_log=settled,
            **options,  # type: ignore[arg-type]
        )
    )
    process = ProxyProcess.granian("mpp_proxy:app", folder=folder, config=config).start()
    return Deployment(process, state, settled)


class Wallet:
    """The paying side: pympp client methods for each kind, recording what they signed."""

    def __init__(self, chain: Anvil, stripe: FakeStripe) -> None:
        self.chain = chain
        self.stripe = stripe
        self.tempo: FreshPayer = chain.payer()
        self.evm_account = Account.create()
        self._evm = evm_client.charge(
            currency=EVM_TOKEN,
            account=self.evm_account,
            chain_id=EVM_CHAIN_ID,
            decimals=6,
            authorization={"name": EVM_DOMAIN["name"], "version": EVM_DOMAIN["version"]},
        )
        self.credentials: list[str] = []

    def method(self, kind: str) -> ClientMethod:
        """A client method for PaymentTransport that records each credential it makes."""
        if kind == "tempo":
            inner = self.tempo.method
        elif kind == "evm":
            inner = self._evm
        elif kind == "stripe":
            inner = self._stripe()
        elif kind == "test":
            inner = testmoney.client_method()
        else:
            raise ValueError(kind)

        async def create_credential(params: CredentialParams) -> str:
            value = await inner.create_credential(params)
            self.credentials.append(value)
            return value

        return ClientMethod(
            method=inner.method,
            create_credential=create_credential,
            can_handle_challenge=inner.can_handle_challenge,
        )

    def _stripe(self) -> ClientMethod:
        async def create_token(params: stripe_client.OnChallengeParameters) -> str:
            # The card holder's side: a shared payment token granted for exactly this charge.
            return self.stripe.grant(amount=int(params.amount), currency=params.currency)

        return stripe_client.charge(create_token=create_token, payment_method="pm_card_visa")

    def pay(self, kind: str, www_authenticate: list[str]) -> str:
        """The Authorization value paying this kind's challenge among the 402's headers."""
        from mpp.client.transport import _payment_challenges

        for value in www_authenticate:
            for text in _payment_challenges(value):
                challenge = Challenge.from_www_authenticate(text)
                method = self.method(kind)
                if challenge.method == method.name:
                    return run(method.create_credential(CredentialParams(challenge=challenge)))
        raise AssertionError(f"no {kind} challenge in {www_authenticate}")
