"""Admit a request against its rate limits at every level: its key, its account, and its
account on the model asked for; each level's limit is the one set for it, else the
operator's default for that level (SILK_DEFAULT_*, SILK_ACCOUNT_*, SILK_ACCOUNT_MODEL_*)."""

from __future__ import annotations

from collections.abc import Mapping

from silk.account.auth import Principal
from silk.appctx import this_app
from silk.limits import Level, Ticket


def levels(principal: Principal, model: str, config: Mapping) -> list[Level]:
    """The levels a request by `principal` on `model` counts against, with their limits."""
    account_rpm, account_tpm, account_slots = principal.limits_for("")
    model_rpm, model_tpm, model_slots = principal.limits_for(model)
    account = principal.account_id
    return [
        Level(f"key:{principal.key_id}", "this API key",
              principal.rpm_limit or config["SILK_DEFAULT_RPM"],
              principal.tpm_limit or config["SILK_DEFAULT_TPM"],
              principal.concurrency_limit or config["SILK_DEFAULT_CONCURRENCY"]),
        Level(f"account:{account}", "this account",
              account_rpm or config["SILK_ACCOUNT_RPM"],
              account_tpm or config["SILK_ACCOUNT_TPM"],
              account_slots or config["SILK_ACCOUNT_CONCURRENCY"]),
        Level(f"account:{account}:model:{model}", f"this account on the model '{model}'",
              model_rpm or config["SILK_ACCOUNT_MODEL_RPM"],
              model_tpm or config["SILK_ACCOUNT_MODEL_TPM"],
              model_slots or config["SILK_ACCOUNT_MODEL_CONCURRENCY"]),
    ]


def admit(principal: Principal, model: str, tokens: int, *, slot: bool = True) -> Ticket:
    """Count a request of about `tokens` tokens at every level, or raise 429 naming the
    level and limit without room. With `slot`, the request holds a concurrency slot at
    each level until its ticket is finished."""
    app = this_app()
    return app.extensions["silk.limiter"].admit(levels(principal, model, app.config), tokens,
                                                slot=slot)
