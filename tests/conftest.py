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
