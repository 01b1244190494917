"""Pytest support for codec authors: the conformance suite as a test class.

In your plugin's tests::

    from bench.testing import ConformanceSuite

    class TestMyCodec(ConformanceSuite):
        codec = "mycodec"                  # registry name
        params = {"quality": 3}            # factory keyword arguments (optional)
        plugin_files = ("my_plugin.py",)   # only for plugins not installed as entry points

Parameters that come from other fixtures (a weights file a test writes) go through the
class-scoped ``conformance_params`` fixture instead::

        @pytest.fixture(scope="class")
        @classmethod
        def conformance_params(cls, my_weights_file):
            return {"weights": my_weights_file}

Each check of :mod:`bench.conformance` becomes one test; a failure names the image and detail.
The checks run once per test class (a class-scoped fixture), with one fresh process for all
of the class's fresh-process decodes.
The suite runs with one torch thread (restored afterwards), as the harness runs every codec:
multi-threaded float kernels need not round identically from process to process (measured:
DeepHQ's decode of a prefix differed between two 2-thread processes on an Intel Xeon with
AMX, never with 1 thread), and the fresh-process check is about state outside the bytes.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import pytest

from bench.conformance import CheckResult, run_checks

#: Checks that must run, by codec kind; "full-quality" runs only where the codec states a bound
#: and "no-exception" only records a check that crashed.
REQUIRED = {
    "progressive": ("encode", "deterministic", "prefixes", "monotone", "fresh-process"),
    "rate-ladder": ("deterministic", "decode", "monotone", "fresh-process"),
}
CHECKS = (
    "encode",
    "deterministic",
    "prefixes",
    "decode",
    "monotone",
    "fresh-process",
    "full-quality",
    "no-exception",
)


@contextlib.contextmanager
def _one_torch_thread():
    """torch (when installed) computes with one thread inside; the previous count is restored."""
    try:
        import torch
    except ImportError:
        torch = None
    previous = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch is not None:
            torch.set_num_threads(previous)


class ConformanceSuite:
    """Subclass with ``codec`` (and optionally ``params``, ``plugin_files``, ``tolerance_db``)."""

    codec: ClassVar[str]
    params: ClassVar[dict[str, Any]] = {}
    plugin_files: ClassVar[tuple[str, ...]] = ()
    tolerance_db: ClassVar[float] = 0.25

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_params(cls) -> dict[str, Any]:
        """The codec factory's keyword arguments: ``params`` unless a subclass overrides it."""
        return dict(cls.params)

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_results(cls, conformance_params: dict[str, Any]) -> list[CheckResult]:
        """The suite's results, computed once per test class; every parametrized test reads them."""
        with _one_torch_thread():
            return run_checks(
                cls.codec,
                conformance_params,
                plugin_files=cls.plugin_files,
                tolerance_db=cls.tolerance_db,
            )

    @pytest.mark.parametrize("check", CHECKS)
    def test_conformance(self, conformance_results: list[CheckResult], check: str) -> None:
        ran = [r for r in conformance_results if r.check == check]
        failures = [r for r in ran if not r.passed]
        assert not failures, "; ".join(f"{r.image}: {r.detail}" for r in failures)
        kind = (
            "progressive"
            if any(r.check == "prefixes" for r in conformance_results)
            else ("rate-ladder")
        )
        if not ran and check == "no-exception":
            return  # recorded only when a check crashed
        if not ran:
            assert check not in REQUIRED[kind], f"{check} never ran"
            pytest.skip(f"{check} does not apply to this {kind} codec")
