import os

import pytest
from hypothesis import settings

# Property tests (tests/test_properties.py): reproducible and bounded in `make test`; `make fuzz` sets
# TESTTIME_HYPOTHESIS=fuzz for long randomized runs (examples scale there, see test_properties.budget).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("fuzz", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("TESTTIME_HYPOTHESIS", "ci"))


@pytest.fixture(scope="session")
def smollm2():
    """The embedded default policy, loaded once per test session (about 2-3 s)."""
    from testtime.policy import load_policy

    policy = load_policy(None, slots=8, ctx_per_slot=2048)
    yield policy
    policy.close()


@pytest.fixture
def attempts(monkeypatch):
    """Every HTTP attempt testtime.netretry makes, by URL (a refused connection leaves no trace on a server)."""
    import threading
    from collections import Counter

    from testtime import netretry

    seen: Counter = Counter()
    lock = threading.Lock()

    def counting(send):
        def wrapped(url, body, headers, timeout_s):
            with lock:
                seen[url] += 1
            return send(url, body, headers, timeout_s)

        return wrapped

    monkeypatch.setattr(netretry, "_send_httpx", counting(netretry._send_httpx))
    monkeypatch.setattr(netretry, "_send_urllib", counting(netretry._send_urllib))
    return seen
