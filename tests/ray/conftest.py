"""A local Ray cluster for the ray backend tests: 2 CPUs, no dashboard, a small object store; started
once per test session by the first test that asks for it and shut down (every Ray process ends) after
the last. The test modules skip themselves when ray is not installed."""

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    for attempt in range(3):  # a loaded machine can miss Ray's fixed 30 s window for the raylet to start
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False,
                     object_store_memory=150 * 1024 * 1024, log_to_driver=False, logging_level="ERROR")
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    try:
        yield ray
    finally:
        ray.shutdown()
