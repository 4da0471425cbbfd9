"""Hypothesis profiles: ``default`` (quick, local), ``ci`` (the README's test command),
``long`` (deliberate runs) and ``sanitize`` (the GPU suite under compute-sanitizer, which
slows every kernel launch). Choose with ``--hypothesis-profile NAME``."""

import os

import pytest
from hypothesis import HealthCheck, settings

from helpers import Device

_common = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("default", max_examples=50, **_common)
settings.register_profile("ci", max_examples=200, print_blob=True, **_common)
settings.register_profile("long", max_examples=2000, **_common)
settings.register_profile("sanitize", max_examples=10, **_common)
settings.load_profile("default")

# method="auto" on the CPU follows this machine's tuning table where `python -m linscan tune`
# wrote one: the tests see the static cost model everywhere (tests of the table enable it in
# a directory of their own).
os.environ["LINSCAN_TUNING"] = "off"


@pytest.fixture(scope="session")
def device(request):
    """The backend a shared test runs on: ``"cpu"``, or ``"cuda"`` where a GPU is usable
    (skipped otherwise). Parametrize with ``indirect=["device"]``, or use ``DEVICES``."""
    if request.param == "cuda":
        from linscan._dispatch import gpu_status

        usable, why = gpu_status()
        if not usable:
            pytest.skip(f"no usable GPU: {why}")
    return Device(request.param)
