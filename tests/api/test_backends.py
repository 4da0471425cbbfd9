"""The backend contract (``linscan.backends.base``): both backends implement every method of
it, with the contract's parameter names, and dispatch hands out the right one."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from linscan import _dispatch
from linscan.backends import base
from linscan.backends.cpu.backend import CPU


def _backends():
    found = [CPU]
    try:
        from linscan.backends.cuda.backend import CUDA  # imports CuPy; needs no GPU
    except ImportError:
        pass
    else:
        found.append(CUDA)
    return found


@pytest.mark.parametrize("cls", _backends(), ids=lambda cls: cls.__name__)
def test_every_backend_implements_the_whole_contract(cls):
    assert issubclass(cls, base.Backend)
    backend = cls()  # raises TypeError if an abstract method were missing
    assert backend.name and backend.xp.__name__ in ("numpy", "cupy")
    for name in base.Backend.__abstractmethods__:
        ours = inspect.signature(getattr(cls, name))
        contract = inspect.signature(getattr(base.Backend, name))
        assert list(ours.parameters) == list(contract.parameters), name


def test_the_contract_names_every_method_the_api_calls():
    """``_api`` speaks to a backend only through the contract."""
    import re

    from linscan import _api

    source = inspect.getsource(_api)
    called = set(re.findall(r"\bbackend\.(\w+)", source))
    assert called <= set(base.Backend.__abstractmethods__) | {"xp"}, called


def test_a_host_call_gets_the_cpu_backend():
    backend, context = _dispatch.backend(None)
    assert isinstance(backend, CPU) and backend.xp is np
    with context:
        pass
