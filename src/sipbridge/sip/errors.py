"""The SIP layer's exceptions. Each carries the response the peer should hear. They stay
interpreted (not in `sipbridge._compiled.MODULES`): a compiled subclass drops a class
attribute such as `status`."""

from __future__ import annotations


class SipError(Exception):
    """A problem with a SIP message that maps to a SIP response status."""

    status: int = 400

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if status is not None:
            self.status = status


class ParseError(SipError):
    """Bytes that are not a well-formed SIP message, URI, header or body (400)."""

    status = 400


class UnsupportedUriScheme(ParseError):
    """A URI whose scheme sipbridge does not serve (416, RFC 3261 8.2.2.1)."""

    status = 416


class MessageTooLarge(ParseError):
    """A message over the configured size limit (513 Message Too Large)."""

    status = 513


class SdpError(ParseError):
    """A session description that does not parse (400)."""

    status = 400


class NotAcceptable(SipError):
    """An offer that cannot be met: no common codec, no audio (488, RFC 3264 6)."""

    status = 488
