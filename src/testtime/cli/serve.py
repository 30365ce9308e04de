"""`testtime serve`: the OpenAI-compatible endpoint (``testtime.serve``) on uvicorn.

With no options: the embedded SmolLM2 on 127.0.0.1:8000, strategy ``auto`` with the table shipped for it.
``--backend openai --base-url URL --model NAME``: a proxy in front of an OpenAI-compatible server (vLLM,
SGLang, llama.cpp's server); its key is ``--upstream-api-key``, never the clients' ``--api-key``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from testtime import settings as S
from testtime.cli import options as opt
from testtime.cli.common import BackendOpt, BaseUrlOpt, PolicyOpt, err_console, fail, fail_config, policy_options
from testtime.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_efforts(items: list[str] | None, defaults: dict[str, int]) -> dict[str, int]:
    """``--effort high=32`` pairs over the defaults; errors name the option."""
    out = dict(defaults)
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or key not in defaults or not value.strip().isdigit():
            raise ConfigError("effort", item, f"expected LEVEL=BUDGET with LEVEL one of {', '.join(defaults)}")
        out[key] = int(value)
    return out


def serve(
    out: Annotated[Path, typer.Option(help="the store: every generation and answer trace")] = Path("runs/serve"),
    backend: BackendOpt = "llamacpp",
    model: Annotated[str | None, typer.Option(
        help="GGUF path or embedded model name (llamacpp), HF id or path (vllm, hf), served name (openai)")] = None,
    base_url: BaseUrlOpt = None,
    policy_option: PolicyOpt = None,
    upstream_api_key: Annotated[str | None, typer.Option(
        envvar="TESTTIME_UPSTREAM_API_KEY", help="openai: the key sent to the upstream server")] = None,
    prm: Annotated[str, typer.Option(help="step scorer for PRM-guided strategies and auto")] = "arith-check",
    allow_prm: Annotated[list[str] | None, typer.Option(help="another scorer a request may name in tts.prm")] = None,
    table: Annotated[Path | None, typer.Option(
        help="calibrated table for auto (default: the one shipped for the embedded model)")] = None,
    strategy: Annotated[str, typer.Option(
        help="default: auto | cot | majority | adaptive_majority | best_of_n | beam | dvts | rebase")] = "auto",
    budget: Annotated[int, typer.Option(help="default budget N per request")] = 4,
    effort: Annotated[list[str] | None, typer.Option(
        help="reasoning_effort LEVEL=BUDGET (repeatable; defaults low=2 medium=4 high=16)")] = None,
    m: Annotated[int, typer.Option("--m", help="tree searches: beam width M")] = 4,
    host: Annotated[str, typer.Option(help="interface to listen on (loopback unless told otherwise)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        envvar="TESTTIME_API_KEY", help="clients must send Authorization: Bearer KEY (all but /health)")] = None,
    model_name: Annotated[str, typer.Option(help="the model id /v1/models lists")] = "testtime",
    max_tokens: opt.ServeMaxTokens = S.MAX_TOKENS.default,
    extraction: Annotated[str, typer.Option(
        help="how final answers are read: strict (answer markers only) | fallback (also math-verify's extraction)")]
        = "strict",
    max_tokens_cap: Annotated[int, typer.Option(help="refuse requests asking for more max_tokens")] = 2048,
    max_budget: Annotated[int, typer.Option(help="refuse requests asking for a larger budget")] = 64,
    max_n: Annotated[int, typer.Option(help="refuse requests asking for more choices n")] = 8,
    max_body_bytes: Annotated[int, typer.Option(help="refuse larger request bodies (413)")] = 1_000_000,
    queue_size: Annotated[int, typer.Option(help="answers waiting or running; more get 429")] = 256,
    batch_window_ms: Annotated[float, typer.Option(help="how long a batch waits for more requests")] = 20.0,
    max_batch: Annotated[int, typer.Option(help="answers solved together at most")] = 16,
    deadline_s: Annotated[float, typer.Option(help="per-request deadline in seconds")] = 600.0,
    stream_reasoning: Annotated[bool, typer.Option(
        help="streamed chats: the search's progress as reasoning_content deltas, then the answer")] = False,
) -> None:
    """Serve an OpenAI-compatible endpoint that answers with compute-optimal test-time scaling."""
    import uvicorn

    from testtime.cli.common import policy_spec
    from testtime.serve import ServeConfig, Solver, create_app
    from testtime.serve.settings import AUTO, DEFAULT_EFFORTS

    try:
        options = policy_options(policy_option)
        if upstream_api_key:
            if backend != "openai":
                raise ConfigError("upstream_api_key", message="only applies to backend openai")
            options["api_key"] = upstream_api_key
        cfg = ServeConfig(host=host, port=port, api_key=api_key, model_name=model_name, out=str(out),
                          strategy=strategy, budget=budget, efforts=parse_efforts(effort, DEFAULT_EFFORTS), prm=prm,
                          allowed_prms=tuple(allow_prm or ()), table=str(table) if table else None, m=m,
                          max_tokens=max_tokens, extraction=extraction,
                          max_tokens_cap=max_tokens_cap, max_budget=max_budget, max_n=max_n,
                          max_body_bytes=max_body_bytes, queue_size=queue_size, batch_window_ms=batch_window_ms,
                          max_batch=max_batch, deadline_s=deadline_s, stream_reasoning=stream_reasoning)
        spec = policy_spec(model, backend, base_url, options)
    except ConfigError as e:
        fail_config(e)
    if host not in LOOPBACK and api_key is None:
        err_console.print(f"[yellow]warning:[/yellow] listening on {host} with no --api-key: anyone who can reach "
                          "it can use it", highlight=False)
    try:
        policy = spec.load()
    except ConfigError as e:
        fail_config(e)
    except (ValueError, FileNotFoundError, RuntimeError, ConnectionError, ImportError, TypeError) as e:
        fail(f"--backend {backend}: {e}")
    svc = Solver(policy, cfg)
    try:
        try:
            svc.executor.scorer_info(cfg.prm)  # a bad --prm is one line now, not an error on every request
            svc.table()
        except ConfigError as e:
            if cfg.strategy == AUTO or e.field != "table":
                fail_config(e)
            err_console.print(f"note: requests for auto will be refused ({e.render(lambda f: '--' + f)})",
                              highlight=False)
        except (ValueError, ImportError, FileNotFoundError) as e:
            fail(f"--prm {cfg.prm}: {e}")
        err_console.print(f"testtime serve: {policy.model_id} on http://{host}:{port}/v1 (strategy {cfg.strategy}, "
                          f"budget {cfg.budget}, store {out})", highlight=False)
        uvicorn.run(create_app(svc), host=host, port=port, log_level="info")
    finally:
        svc.close()
        policy.close()
