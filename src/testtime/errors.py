"""The two kinds of error the library raises on purpose.

* ``ConfigError``: a configuration value it refuses. It names the *field* (``n``, ``prm``, ``m``), as
  vLLM's ``SamplingParams`` does; only a front end spells a field its own way (``--prm`` on the command
  line, ``prm:`` in a recipe), with ``render``.
* ``ProblemFailure``: one problem's remote calls failed after the backend's own retries. The engine
  records that problem as failed and the run goes on; anything else is a bug and propagates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

_MISSING = object()


class ConfigError(ValueError):
    """``ConfigError("n", 6, "must be a multiple of m=4")``; several fields: ``ConfigError(("n", "m"), (6, 4), ...)``.

    ``value`` may be left out when the error is about a field that is missing (``ConfigError("prm", message=...)``).
    """

    def __init__(self, field: str | Sequence[str], value: Any = _MISSING, message: str = "") -> None:
        self.fields: tuple[str, ...] = (field,) if isinstance(field, str) else tuple(field)
        if value is _MISSING:
            self.values: tuple[Any, ...] | None = None
        elif len(self.fields) == 1:
            self.values = (value,)
        else:
            self.values = tuple(value)
        self.message = message
        super().__init__(self.render())

    @property
    def field(self) -> str:
        return self.fields[0]

    def render(self, spell: Callable[[str], str] = lambda f: f) -> str:
        """The message with each field spelled by ``spell`` (identity: the library's own field names)."""
        if self.values is None:
            head = " ".join(spell(f) for f in self.fields)
        else:
            head = " ".join(f"{spell(f)} {v}" for f, v in zip(self.fields, self.values, strict=True))
        return f"{head}: {self.message}" if self.message else head


class ProblemFailure(RuntimeError):
    """One problem's remote calls failed for good (generation or scoring, after retries)."""


def one_line(err: BaseException, limit: int = 500) -> str:
    """An exception as one line of at most `limit` characters (for failed results and summaries)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
