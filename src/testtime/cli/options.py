"""The Typer options of the shared run settings, generated from their declarations (``testtime.settings``):
type, help and valid range come from there, the default stays at the parameter
(``max_tokens: opt.MaxTokens = S.MAX_TOKENS.default``). Only the flag's spelling is the CLI's own. A value
out of range is refused by the library's check (``RunConfig`` and the like), spelled back as this flag."""

from __future__ import annotations

from typing import Any

from testtime import settings as S


def _opt(setting: S.Setting, help: str | None = None) -> Any:
    return setting.option("--" + setting.name.replace("_", "-"), help=help)


MaxTokens = _opt(S.MAX_TOKENS)
Temperature = _opt(S.TEMPERATURE)
TopP = _opt(S.TOP_P)
Fewshot = _opt(S.FEWSHOT)
Seed = _opt(S.SEED)
Ci = _opt(S.CI)
# the server: a request that leaves max_tokens unset gets this
ServeMaxTokens = _opt(S.MAX_TOKENS, "tokens per solution when a request does not say")

__all__ = ["Ci", "Fewshot", "MaxTokens", "Seed", "ServeMaxTokens", "Temperature", "TopP"]
