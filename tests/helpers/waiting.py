"""Polling until something holds."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 300.0, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(interval)
    return False
