"""Retrying idempotent work with exponential backoff."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Errors that say the request itself is wrong: retrying cannot help.
_PERMANENT = (ValueError, TypeError, KeyError)


def _transient(error: Exception) -> bool:
    return not isinstance(error, _PERMANENT)


def with_retries(call: Callable[[], T], retries: int, delay_s: float,
                 log: Callable[[str], None], retryable: Callable[[Exception], bool] = _transient,
                 max_delay_s: float = float("inf"), sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``call``; on an error ``retryable`` accepts (by default any but ValueError,
    TypeError and KeyError) wait ``delay_s``, doubling up to ``max_delay_s``, and try again,
    up to ``retries`` more times. Other errors, and the last one, are raised."""
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as error:
            if attempt == retries or not retryable(error):
                raise
            wait = min(delay_s * 2**attempt, max_delay_s)
            log(f"{type(error).__name__}: {error}; retry "
                f"{attempt + 1}/{retries} in {wait:.1f} s")
            sleep(wait)
    raise AssertionError("unreachable")
