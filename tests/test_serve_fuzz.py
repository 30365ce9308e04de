"""API fuzzing: schemathesis generates request bodies from the server's OpenAPI schema (a fake policy behind
it); no body may get a 5xx or hang. Bounded and derandomized, so CI runs the same examples every time."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from fakes import ScriptedPolicy
from testtime.serve import ServeConfig, Solver, create_app


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    store = tmp_path_factory.mktemp("fuzz-store")
    cfg = ServeConfig(out=str(store), strategy="majority", budget=2, max_budget=8, max_n=2, batch_window_ms=0,
                      efforts={"low": 1, "medium": 2, "high": 8},
                      deadline_s=20)
    backend = Solver(ScriptedPolicy(), cfg)
    yield create_app(backend)
    backend.close()


@pytest.mark.timeout(300)
def test_no_server_errors_for_any_generated_request(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen: dict[str, int] = {}

    # schemathesis's own pytest integration does not load under this pytest: its strategy under hypothesis
    @given(case=schema.as_strategy())
    @settings(max_examples=60, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        response = case.call(timeout=30)
        seen[case.path] = seen.get(case.path, 0) + 1
        assert response.status_code < 500, (case.path, case.body, response.text)
        if response.status_code >= 400:
            err = response.json()["error"]  # OpenAI-shaped, whatever went wrong
            assert set(err) >= {"message", "type", "param", "code"}

    check()
    # both POST endpoints were exercised, not only the GETs
    assert seen.get("/v1/chat/completions", 0) >= 5 and seen.get("/v1/completions", 0) >= 5, seen
