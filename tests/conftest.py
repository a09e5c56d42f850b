"""Shared fixtures and the property-test profiles.

Property tests draw the same examples on every run (derandomized), so a
run cannot pass or fail by chance. For a deeper, random search set
NBKIT_HYPOTHESIS=explore (thousands of examples per test), for example
``NBKIT_HYPOTHESIS=explore pytest tests/test_properties.py``.
"""

import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("fixed", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("NBKIT_HYPOTHESIS", "fixed"))


@pytest.fixture
def float64():
    """Run a test with float64 as torch's default dtype, then restore it."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
