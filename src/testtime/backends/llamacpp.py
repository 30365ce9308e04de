"""llama.cpp helpers shared by the llama.cpp policy and the probe's llama.cpp features (xllamacpp).

xllamacpp is imported only when a server's settings are built.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def quiet_stderr(enabled: bool):
    """llama.cpp prints its load log on fd 2 from C; silence it unless verbose."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def server_params(model_path: str | Path, slots: int, ctx_per_slot: int, threads: int | None, verbose: bool) -> Any:
    """The llama.cpp server settings every in-process server here shares (threads = all cores by default)."""
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = str(model_path)
    p.n_parallel = slots
    p.n_ctx = slots * ctx_per_slot
    n_threads = threads or max(1, os.cpu_count() or 1)
    p.cpuparams.n_threads = n_threads
    p.cpuparams_batch.n_threads = n_threads
    p.warmup = False
    p.verbosity = 1 if verbose else -1
    p.log_json = False
    return p
