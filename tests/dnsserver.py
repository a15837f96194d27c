"""A small authoritative DNS server on loopback for tests, so that nothing a test does
makes the gateway ask the host's resolver. Answers A, AAAA and SRV from a dict; names it
does not know get NXDOMAIN; `silent` names get no answer at all (a resolver that hangs)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Self

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class DnsServer:
    """Usage: `with DnsServer({("pbx.test", "A"): ["127.0.0.1"]}) as dns: dns.address`."""

    def __init__(self, records: Mapping[tuple[str, str], Iterable[str]], *,
                 silent: Iterable[str] = (), ttl: int = 60, host: str = "127.0.0.1") -> None:
        self.records = {(name.rstrip(".").lower(), kind.upper()): list(values)
                        for (name, kind), values in records.items()}
        self.silent = {name.rstrip(".").lower() for name in silent}
        self.ttl = ttl
        self.queries: list[tuple[str, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.host, self.port = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:  # noqa: BLE001 (not DNS: ignore it)
                continue
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            kind = dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, kind))
            if name in self.silent:
                continue
            reply = dns.message.make_response(query)
            values = self.records.get((name, kind))
            if values:
                reply.answer.append(dns.rrset.from_text_list(
                    question.name, self.ttl, "IN", kind, values))
            elif not any(n == name for n, _ in self.records):
                reply.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(reply.to_wire(), peer)
