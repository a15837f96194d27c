"""SIP dialogs (RFC 3261 12): identity, route set, CSeq, and in-dialog requests."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sipbridge.sip.address import Address, next_hop
from sipbridge.sip.errors import SipError
from sipbridge.sip.headers import NameAddr, Via
from sipbridge.sip.message import Headers, Request, Response
from sipbridge.sip.uri import SipUri, Uri

DialogId = tuple[str, str, str]  # (Call-ID, local tag, remote tag)


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(slots=True)
class Dialog:
    """One dialog, from either side (RFC 3261 12.1)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local: NameAddr  # our From in requests we send
    remote: NameAddr  # their address, our To in requests we send
    remote_target: Uri
    route_set: tuple[NameAddr, ...]
    local_seq: int
    remote_seq: int | None
    peer: Address  # the flow the dialog was made on (the INVITE's source, or where we sent it)
    is_uas: bool
    state: DialogState = DialogState.EARLY
    local_contact: str = ""
    secure: bool = False
    via_host: str = ""
    via_port: int = 5060
    # The sent-by (host, port) of the INVITE that made the dialog over a connection (TCP):
    # the address the peer listens on, reached over that same connection (RFC 5923).
    flow_alias: tuple[str, int] | None = None
    # Send in-dialog requests to `peer` whatever Contact and Record-Route say: for peers
    # behind NAT whose Contact cannot be reached (Asterisk's rewrite_contact, force_rport).
    to_source: bool = False
    _branch_count: int = field(default=0)

    @property
    def id(self) -> DialogId:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uas(
        cls, invite: Request, local_tag: str, local_seq: int, peer: Address, local_contact: str
    ) -> Dialog:
        """RFC 3261 12.1.1: the UAS side, from the INVITE we answer."""
        contacts = invite.contacts
        if not contacts:
            raise SipError("INVITE has no Contact header", 400)
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_.tag or "",
            local=invite.to.with_tag(local_tag),
            remote=invite.from_,
            remote_target=contacts[0].uri,
            route_set=invite.record_routes,
            local_seq=local_seq,
            remote_seq=invite.cseq.seq,
            peer=peer,
            is_uas=True,
            local_contact=local_contact,
            secure=isinstance(invite.uri, SipUri) and invite.uri.scheme == "sips",
        )

    @classmethod
    def as_uac(cls, invite: Request, response: Response, peer: Address) -> Dialog:
        """RFC 3261 12.1.2: the UAC side, from a 1xx/2xx with a To tag."""
        contacts = response.contacts
        target = contacts[0].uri if contacts else invite.uri
        return cls(
            call_id=invite.call_id,
            local_tag=invite.from_.tag or "",
            remote_tag=response.to.tag or "",
            local=invite.from_,
            remote=response.to,
            remote_target=target,
            route_set=tuple(reversed(response.record_routes)),
            local_seq=invite.cseq.seq,
            remote_seq=None,
            peer=peer,
            is_uas=False,
            local_contact=invite.headers.get("Contact") or "",
        )

    def check_remote_cseq(self, request: Request) -> None:
        """RFC 3261 12.2.2: a lower CSeq than the last one is out of order (500)."""
        seq = request.cseq.seq
        if request.method in ("ACK", "CANCEL"):
            return
        if self.remote_seq is not None and seq <= self.remote_seq:
            # Equal CSeq on a new transaction is a retransmission the transaction layer missed.
            raise SipError("CSeq out of order", 500)
        self.remote_seq = seq

    def refresh_target(self, request_or_response: Request | Response) -> None:
        """A target refresh (re-INVITE, UPDATE, or their 2xx) may move the remote target."""
        contacts = request_or_response.contacts
        if contacts:
            self.remote_target = contacts[0].uri

    def destination(self) -> Address:
        """Where an in-dialog request goes (RFC 3261 12.2.1.1, 8.1.2; RFC 3263): the first
        Route of the route set (loose or strict, the first route is the next hop either way),
        else the remote target (Contact). A destination that is the connection the dialog
        was made on, or the address its INVITE said it was sent by, reuses that connection
        (RFC 5923)."""
        if self.to_source:
            return self.peer
        uri = self.route_set[0].uri if self.route_set else self.remote_target
        if not isinstance(uri, SipUri):
            return self.peer  # a tel: or other Contact names no host: keep to the flow
        hop = next_hop(uri)
        peer = self.peer
        # Many phones on TCP leave transport= out of their Contact: a URI without one that
        # names this connection's far end keeps to the connection.
        same_transport = hop.transport == peer.transport or not uri.has_param("transport")
        if peer.reliable and same_transport and (
                (hop.host, hop.port) in ((peer.host, peer.port), self.flow_alias)):
            return peer
        return hop

    def create_request(
        self,
        method: str,
        branch: str,
        *,
        headers: Headers | None = None,
        body: bytes = b"",
        cseq: int | None = None,
    ) -> Request:
        """Build an in-dialog request (RFC 3261 12.2.1.1), loose or strict routing."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        h = Headers()
        via = Via(self.destination().transport.upper(), self.via_host, self.via_port,
                  (("branch", branch), ("rport", None)))
        h.add("Via", str(via))
        h.add("Max-Forwards", "70")
        h.add("From", str(self.local))
        h.add("To", str(self.remote))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        uri: Uri = self.remote_target
        routes = list(self.route_set)
        if routes and isinstance(routes[0].uri, SipUri) and not routes[0].uri.has_param("lr"):
            # RFC 3261 12.2.1.1 strict routing: the first route becomes the Request-URI.
            uri = routes[0].uri
            routes = [*routes[1:], NameAddr(self.remote_target)]
        for route in routes:
            h.add("Route", str(route))
        if self.local_contact and method in ("INVITE", "UPDATE", "REFER", "SUBSCRIBE", "NOTIFY"):
            h.add("Contact", self.local_contact)
        if headers is not None:
            for name, value in headers:
                h.add(name, value)
        return Request(method, uri, h, body)

    def ack_for_2xx(self, invite: Request, branch: str | None = None) -> Request:
        """The ACK for a 2xx (RFC 3261 13.2.2.4): built like any in-dialog request, with the
        INVITE's CSeq number. It is a transaction of its own, so it needs a branch of its own
        (8.1.1.7); by default one derived from the INVITE's, so that the ACK sent again for
        each 2xx retransmission is the same ACK."""
        if branch is None:
            branch = f"{invite.top_via.branch or ''}.ack"
        return self.create_request("ACK", branch, cseq=invite.cseq.seq)

