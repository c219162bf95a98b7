"""What tests/test_fuzz.py ran, for the test session summary (tests/conftest.py): totals, and hostile
records per input format. Kept here so that the summary reads it without importing a test module."""

from __future__ import annotations

from collections import Counter

LINES_RUN = {"lines": 0, "examples": 0, "by_format": Counter()}
