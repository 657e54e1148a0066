"""Small helpers shared by test modules (tests/ is on sys.path: `from helpers import error_of`)."""

from __future__ import annotations

import pytest

from classicnets.errors import ClassicNetsError


def error_of(fn) -> str:
    """The one-line ClassicNetsError message `fn()` raises."""
    with pytest.raises(ClassicNetsError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message, "user errors are one line"
    return message
