"""Retrying idempotent work with exponential backoff."""

import time
from collections.abc import Callable

# Errors that say the request itself is wrong: retrying cannot help.
_PERMANENT = (ValueError, TypeError, KeyError)


def with_retries(call: Callable[[], int], retries: int, delay_s: float,
                 log: Callable[[str], None]) -> int:
    """Run ``call``; on a transient error wait and try again, up to ``retries`` more times."""
    for attempt in range(retries + 1):
        try:
            return call()
        except _PERMANENT:
            raise
        except Exception as error:
            if attempt == retries:
                raise
            wait = delay_s * 2**attempt
            log(f"{type(error).__name__}: {error}; retry "
                f"{attempt + 1}/{retries} in {wait:.1f} s")
            time.sleep(wait)
    raise AssertionError("unreachable")
