"""Shared test settings.

Hypothesis profiles: ``ci`` (derandomised, bounded: the whole suite in a few minutes on 2 cores)
and ``thorough`` (many more examples, random). Select one with ``--hypothesis-profile=NAME`` or the
``HYPOTHESIS_PROFILE`` environment variable; the default is ``ci``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=40,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=1000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    # pyproject turns every warning into an error. When Hypothesis reports a failing example it
    # touches ``mypy_extensions.TypedDict``, which warns on access in mypy_extensions >= 1.1; that
    # error then surfaces as an INTERNALERROR that hides the real failure. Ignore only that one.
    config.addinivalue_line(
        "filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
    )
