"""The trunks the gateway dials out through, by name: `[trunk]` (named "default"),
`[trunks.NAME]` tables, and each `[[registration]]` (its registrar, its digest
credentials, its AOR as From)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from sipbridge.calls.call import Trunk
from sipbridge.config import Config, RegistrationConfig, TrunkConfig
from sipbridge.sip.address import Address, next_hop
from sipbridge.sip.uri import parse_sip_uri

DEFAULT = "default"


def trunk_from_config(name: str, t: TrunkConfig) -> Trunk:
    """A `[trunk]` or `[trunks.NAME]` table as the calls plane dials through it."""
    host, port = t.bind
    credentials = (t.username, t.password or "") if t.username else None
    return Trunk(Address(t.transport, host, port), t.from_uri, t.domain or host, credentials,
                 name=name, pai=t.pai, dtmf=t.dtmf, headers=tuple(t.headers.items()))


def trunk_from_registration(r: RegistrationConfig) -> Trunk:
    """A registration used as a trunk: calls go to its registrar with its credentials,
    From its AOR."""
    hop = next_hop(parse_sip_uri(r.registrar))
    transport = r.transport if r.transport != "udp" else hop.transport
    port = hop.port or (5061 if transport == "tls" else 5060)
    username = r.username
    if username is None and r.password:
        username = r.aor.split(":", 1)[1].split("@", 1)[0]
    credentials = (username, r.password or "") if username else None
    domain = parse_sip_uri(r.aor).host
    return Trunk(Address(transport, hop.host, port), r.aor, domain, credentials, name=r.name)


class Trunks(Mapping[str, Trunk]):
    """Trunks by name; `default` is `[trunk]`'s when there is one."""

    def __init__(self, trunks: Iterable[Trunk] = ()) -> None:
        self._by_name: dict[str, Trunk] = {}
        for trunk in trunks:
            self._by_name.setdefault(trunk.name, trunk)

    @classmethod
    def from_config(cls, config: Config) -> Trunks:
        found: list[Trunk] = []
        if config.trunk is not None:
            found.append(trunk_from_config(DEFAULT, config.trunk))
        found.extend(trunk_from_config(name, t) for name, t in config.trunks.items())
        found.extend(trunk_from_registration(r) for r in config.registration)
        return cls(found)

    @property
    def default(self) -> Trunk | None:
        return self._by_name.get(DEFAULT)

    def __getitem__(self, name: str) -> Trunk:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)
