"""Calibrated tables that ship with testtime: ``run --strategy optimal`` uses one when no ``--table`` is given.

One ships for the embedded default (SmolLM2-135M with the arith-check PRM, calibrated on ``arith``; how it was
made is in ``shipped/README.md``). A table says which policy and PRM it was calibrated for, and the selector
refuses it for others (``selector.check_table``), so only the matching default is offered here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from testtime.errors import ConfigError
from testtime.policy.models import DEFAULT_MODEL

# (embedded model, PRM spec, prompt form) -> the table shipped for it: "fewshot" for runs (3 worked examples,
# `run --strategy optimal`), "chat" for the server (zero-shot chat questions, policy.prompts.CHAT_PROMPT)
SHIPPED: dict[tuple[str, str, str], str] = {
    (DEFAULT_MODEL, "arith-check", "fewshot"): "smollm2-135m-arith-check.json",
    (DEFAULT_MODEL, "arith-check", "chat"): "smollm2-135m-arith-check-chat.json",
}


def shipped_table(model: str | None, prm: str | None, prompt: str = "fewshot") -> Path:
    """The shipped table for this policy, PRM and prompt form (defaults: the embedded model, arith-check,
    few-shot runs)."""
    key = (model or DEFAULT_MODEL, prm or "arith-check", prompt)
    name = SHIPPED.get(key)
    if name is None:
        raise ConfigError("table", message=(
            f"none ships for model {key[0]} with PRM {key[1]} for {key[2]} prompts (shipped: "
            f"{', '.join(f'{m} + {p} ({f})' for m, p, f in SHIPPED)}); calibrate one with `testtime recalibrate` or "
            "`testtime sweep` + `testtime calibrate` and pass it"))
    return Path(str(resources.files("testtime.optimal").joinpath("shipped", name)))
