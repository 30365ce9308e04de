"""``testtime serve``: an OpenAI-compatible endpoint that answers each request with test-time scaling.

``create_app(Solver(policy, ServeConfig(...)))`` is the FastAPI app; ``serve(...)`` (``testtime.cli.serve``)
runs it with uvicorn. The pieces: ``settings`` (the validated ``ServeConfig``), ``schemas`` (request bodies),
``plan`` (a request -> its strategy, budget and problems), ``batcher`` (cross-request batches in a worker
thread), ``solver`` (a batch through the engine or the selector; the answer), ``metrics`` (Prometheus).
"""

from testtime.serve.app import create_app
from testtime.serve.settings import ServeConfig
from testtime.serve.solver import Answer, Job, Solver

__all__ = ["Answer", "Job", "ServeConfig", "Solver", "create_app"]
