"""Random tokens (tags, branches, Call-IDs, call ids) from the system's CSPRNG, read a
block at a time.

`secrets.token_hex` makes one getrandom(2) system call per token, and a call set-up
makes several tokens; here one call fills a 4 KiB block that serves hundreds of them.
The bytes are the same kind (os.urandom), each handed out once. A forked child starts
with an empty block, so that it never hands out its parent's bytes again.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

_BLOCK = 4096


class TokenPool:
    """Unpredictable bytes from os.urandom, taken from a block read in advance."""

    def __init__(self, block: int = _BLOCK,
                 source: Callable[[int], bytes] | None = None) -> None:
        self.block = block
        self._urandom: Callable[[int], bytes] = os.urandom if source is None else source
        self._buf = b""
        self._pos = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bytes:
        """`n` bytes never handed out before (`n` <= the block size)."""
        with self._lock:
            pos = self._pos
            end = pos + n
            if end > len(self._buf):
                self._buf = self._urandom(max(self.block, n))
                pos, end = 0, n
            self._pos = end
            return self._buf[pos:end]

    def reset(self) -> None:
        """Forget the block (after a fork)."""
        self._buf = b""
        self._pos = 0
        self._lock = threading.Lock()


_pool = TokenPool()
os.register_at_fork(after_in_child=_pool.reset)


def token_hex(n: int) -> str:
    """`2 * n` hex digits from `n` random bytes, as `secrets.token_hex(n)`."""
    return _pool.take(n).hex()
