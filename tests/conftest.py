"""Hypothesis profiles: ``default`` (quick, local), ``ci`` (the README's test command),
``long`` (deliberate runs) and ``sanitize`` (the GPU suite under compute-sanitizer, which
slows every kernel launch). Choose with ``--hypothesis-profile NAME``."""

from hypothesis import HealthCheck, settings

_common = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("default", max_examples=50, **_common)
settings.register_profile("ci", max_examples=200, print_blob=True, **_common)
settings.register_profile("long", max_examples=2000, **_common)
settings.register_profile("sanitize", max_examples=10, **_common)
settings.load_profile("default")
