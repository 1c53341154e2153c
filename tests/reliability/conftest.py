"""The reliability tests drive the same real daemon as the integration tests."""

from ..integration.conftest import runner  # noqa: F401 - the shared DaemonRunner fixture
