"""Which call a SIP Call-ID belongs to, so that every SIP message of a call reaches its
timeline: the calls in progress, and the ended ones for as long as their transactions may
still send or receive. A call's end does not end its transactions (RFC 3261 17): our BYE is
retransmitted until Timer F, the 200 to the caller's BYE is sent again to each retransmission
until Timer J, a late NOTIFY is still answered; each lasts at most 64*T1 after the end.
`SipTrace` puts each message on its call's timeline."""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable

from sipbridge.calls.call import Call, CallState
from sipbridge.calls.events import CallEvents, Noted, note
from sipbridge.sip.address import Address
from sipbridge.sip.sdp import redact_keys

_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE)
MAX_TRACE = 8192  # bytes of a SIP message kept on the timeline


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
        self.expire()
        return self._calls.get(sip_call_id)

    def find(self, sip_call_id: str) -> Call | None:
        """`get` as of the last `expire` (the trace expires once per message)."""
        return self._calls.get(sip_call_id)

    def __contains__(self, sip_call_id: object) -> bool:
        return isinstance(sip_call_id, str) and self.get(sip_call_id) is not None

    def __len__(self) -> int:
        self.expire()
        return len(self._calls)

    def ended(self, call: Call) -> None:
        """The call ended: its Call-IDs are kept `linger` seconds more."""
        until = self.clock() + self.linger
        for sip_call_id in self._ids.pop(call.id, ()):
            self._ended.append((until, sip_call_id, call))
        self.expire()

    def expire(self) -> bool:
        """Let go of the ended calls' Call-IDs whose time is up; True while any is known."""
        ended = self._ended
        if not ended:
            return bool(self._calls)
        now = self.clock()
        while ended and (ended[0][0] <= now or len(ended) > self.limit):
            _, sip_call_id, call = ended.popleft()
            if self._calls.get(sip_call_id) is call:
                del self._calls[sip_call_id]
        return bool(self._calls)


class SipTrace:
    """Each SIP message of a known call onto its timeline, as the driver receives and
    sends it, and what the transport could not send as a warning there."""

    def __init__(self, ids: SipCallIds, events: CallEvents) -> None:
        self.ids = ids
        self.events = events

    def _call_of(self, data: bytes) -> Call | None:
        """The call of a message's Call-ID, as of the last expiry."""
        match = _CALL_ID.search(data)
        if match is None:
            return None
        return self.ids.find(match.group(1).strip().decode("utf-8", "replace"))

    def trace(self, data: bytes, peer: Address, direction: str, *, early: bool = False
              ) -> bool:
        """A SIP message of a known call onto its timeline (start line, full text), an ended
        call's too while its transactions last; False when it belongs to no call (yet).
        `early`: before the UA has read it, when an INVITE with an ended call's Call-ID may
        still make a new call (False then: it is traced once the UA has acted)."""
        ids = self.ids
        if not ids.expire():  # no call at all: not even the Call-ID is looked for
            return False
        # `_call_of`, inline: this runs for every SIP message.
        match = _CALL_ID.search(data)
        if match is None:
            return False
        call = ids._calls.get(match.group(1).strip().decode("utf-8", "replace"))
        if call is None:
            return False
        if early and call.state is CallState.ENDED and data.startswith(b"INVITE "):
            return False
        # SDES keys (a=crypto ... inline:) never reach the timeline nor what it feeds.
        text = redact_keys(data[:MAX_TRACE].decode("utf-8", "replace"))
        end = text.find("\r\n")
        self.events.emit(Noted(call, {"at": time.time(), "kind": "sip", "dir": direction,
                                      "peer": str(peer), "line": text[:end] if end >= 0
                                      else text, "text": text}))
        return True

    def unsent(self, data: bytes, dest: Address, reason: str) -> None:
        """A message the transport could not send, as a warning on its call's timeline."""
        self.ids.expire()
        call = self._call_of(data)
        if call is not None:
            line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")[:200]
            self.events.emit(note(call, "warning",
                                  detail=f"{line} to {dest} not sent: {reason}"))
