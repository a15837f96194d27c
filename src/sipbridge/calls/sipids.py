"""Which call a SIP Call-ID belongs to, so that every SIP message of a call reaches its
timeline: the calls in progress, and the ended ones for as long as their transactions may
still send or receive. A call's end does not end its transactions (RFC 3261 17): our BYE is
retransmitted until Timer F, the 200 to the caller's BYE is sent again to each retransmission
until Timer J, a late NOTIFY is still answered; each lasts at most 64*T1 after the end."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sipbridge.calls.call import Call


class SipCallIds:
    """SIP Call-ID -> call: a call's own, and those of its other legs (a bridged target).
    Once the call ends (`ended`), its Call-IDs stay for `linger` seconds of `clock`, at
    most `limit` of them (the oldest go first)."""

    def __init__(self, clock: Callable[[], float], *, linger: float, limit: int) -> None:
        self.clock = clock
        self.linger = linger
        self.limit = limit
        self._calls: dict[str, Call] = {}
        self._ids: dict[str, list[str]] = {}  # call id -> its SIP Call-IDs, while it lives
        self._ended: deque[tuple[float, str, Call]] = deque()  # (until, Call-ID, call)

    def __setitem__(self, sip_call_id: str, call: Call) -> None:
        """`sip_call_id` is a leg of `call` (a new call may take an ended call's Call-ID)."""
        self._calls[sip_call_id] = call
        self._ids.setdefault(call.id, []).append(sip_call_id)

    def get(self, sip_call_id: str) -> Call | None:
        self._expire()
        return self._calls.get(sip_call_id)

    def __contains__(self, sip_call_id: object) -> bool:
        return isinstance(sip_call_id, str) and self.get(sip_call_id) is not None

    def __len__(self) -> int:
        self._expire()
        return len(self._calls)

    def ended(self, call: Call) -> None:
        """The call ended: its Call-IDs are kept `linger` seconds more."""
        until = self.clock() + self.linger
        for sip_call_id in self._ids.pop(call.id, ()):
            self._ended.append((until, sip_call_id, call))
        self._expire()

    def _expire(self) -> None:
        ended = self._ended
        if not ended:
            return
        now = self.clock()
        while ended and (ended[0][0] <= now or len(ended) > self.limit):
            _, sip_call_id, call = ended.popleft()
            if self._calls.get(sip_call_id) is call:
                del self._calls[sip_call_id]
