import os

from hypothesis import HealthCheck, settings

# numba compiles on first call: no per-example deadline; CI gets more examples than a dev loop.
settings.register_profile("default", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=200,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "default")
