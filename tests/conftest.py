import pytest


@pytest.fixture(scope="session")
def smollm2():
    """The embedded default policy, loaded once per test session (about 2-3 s)."""
    from testtime.policy import load_policy

    policy = load_policy(None, slots=8, ctx_per_slot=2048)
    yield policy
    policy.close()
