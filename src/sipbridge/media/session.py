"""One call's RTP endpoint: receive, buffer, decode; encode, pace and send.

The I/O is a non-blocking socket read by the event loop (`add_reader`); the work per
packet and per 20 ms tick is plain calls into the sans-IO pieces (rtp, g711, dtmf,
jitterbuffer). The playout tick comes from the one scheduler all sessions share. On the
compiled path the engine reads the socket instead and hands `receive` each datagram
with its header already parsed, and RTP (and the RTP port's STUN answers) goes to
`outgoing`, sent with the loop pass's other packets, in the order queued. There the
engine's read takes an ordinary packet (the stream's voice, in the clear, from its
source) through the session's `inbound` in C, as `receive` would, and only has it pump.

A tick has two halves: input (the jitter buffer's frame for the tick, decoded, to
`on_audio`) and output (the next 20 ms of queued audio, encoded and sent). The tick's
time is a deadline, not a wait: once the frame the next tick would take is in the
buffer, `pump` runs that tick's input at once (at most one tick ahead), and with
`follow_input` (echo) its output too, so an echo leaves as soon as its packet is in.
At the tick's time only what has not run yet runs: the input with a late or lost
frame (concealed), and the output of sessions that play their own audio, on the grid.

Phones send STUN beside their media to keep a NAT binding open (RFC 7983 tells it apart
by its first octet, 0..3). It is counted as STUN, not as malformed RTP, and a Binding
Request from the call's peer gets its Binding Success Response from the same port.

An SRTP stream (RFC 3711) is protected and unprotected at the socket: right before each
send and right after each RTP or RTCP datagram is told from STUN; a packet that fails
(bad tag, wrong key, replay) is dropped and counted, and the call goes on.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import random
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sipbridge.audiostream import NegotiatedAudio
from sipbridge.media import speed
from sipbridge.media.codecs import FRAME_MS, G711, AudioCodec, open_codec
from sipbridge.media.dtmf import DtmfDigit, DtmfReceiver, DtmfSender
from sipbridge.media.jitterbuffer import JitterBuffer
from sipbridge.media.ports import SO_TIMESTAMPNS, Endpoint
from sipbridge.media.recorder import Recorder
from sipbridge.media.resample import MODEL_RATE, PHONE_RATE, Resampler
from sipbridge.media.rtp import (
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtpError,
    SenderReport,
    SourceDescription,
    build_rtcp,
    build_rtp,
    ntp_timestamp,
    parse_rtcp,
    parse_rtp,
)
from sipbridge.media.srtp import SrtpContext
from sipbridge.media.stun import StunError, binding_response, parse_stun
from sipbridge.records import MediaFigures

log = logging.getLogger("sipbridge.media")

_TIMESPEC = struct.Struct("qq")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)

RTCP_INTERVAL = 5.0  # seconds (RFC 3550 6.2, the minimum for a two-party session)
FLOOD_RATE = 150.0  # packets per second allowed per session (50 audio + DTMF + slack)
FLOOD_BURST = 75.0
SSRC_SWITCH = 10  # consecutive packets from a new SSRC before it is adopted
STUN_RATE = 5.0  # STUN answers per second per session (a keep-alive comes every few seconds)
STUN_BURST = 5.0
# RFC 7983 7: a datagram whose first octet is 0..3 is STUN; RTP and RTCP start at 128.
# `data < STUN_BELOW` is that test in one comparison (an empty datagram passes it too,
# and then fails as STUN and as RTP alike).
STUN_BELOW = b"\x04"

Address = tuple[str, int]
# An RTP packet's fields as the compiled I/O parses them (sipbridge.media._rtpio.parse):
# payload type, marker, sequence, timestamp, SSRC, payload, CSRCs.
Parsed = tuple[int, bool, int, int, int, bytes, tuple[int, ...]]
# A packet the compiled I/O sends with the loop pass's others: the session, its socket's
# fd, the datagram, the address, the RTP payload's size (-1: a STUN answer), for the
# counters if it fails.
Outgoing = tuple["MediaSession", int, bytes, Address, int]


class Inbound:
    """What a session's receive reads and writes for each RTP packet: the datagrams
    counted, the flood bucket, the packets of the stream taken in and when the last came,
    the latched source and the remote SSRC, the stream's ReceptionStats and its jitter
    buffer; and, for the compiled path, `pt` and `clock_rate`.

    In one object so that the compiled path's batch read (sipbridge.media._rtpio.Inbound,
    the same attributes) can take an ordinary packet in C, as `MediaSession.receive`
    would: counted, accounted in `rx`, put in `jitter`. `pt` is the payload type it may
    take there (-1: none, as on SRTP; every packet then goes to `receive`). On the Python
    path nothing reads `pt` or `clock_rate`."""

    __slots__ = ("audio", "burst", "clock_rate", "foreign", "jitter", "last", "latched",
                 "packets", "pt", "rate", "rx", "ssrc", "token_at", "tokens")

    def __init__(self, jitter: JitterBuffer, rx: ReceptionStats, now: float, rate: float,
                 burst: float) -> None:
        self.jitter = jitter
        self.rx = rx
        self.packets = 0  # datagrams on the RTP port other than STUN: packets_in
        self.rate = rate  # the flood bucket: tokens a second, and its size
        self.burst = burst
        self.tokens = burst
        self.token_at = now
        self.foreign = 0  # consecutive packets from another SSRC
        self.audio = 0  # packets of the stream taken in
        self.last = now  # when the last one came
        self.latched: Address | None = None  # where the stream comes from (symmetric RTP)
        self.ssrc: int | None = None  # the stream's SSRC
        self.pt = -1
        self.clock_rate = 0


@dataclass(slots=True)
class MediaStats:
    inbound: Inbound  # its `packets` are `packets_in`
    packets_out: int = 0
    rtcp_in: int = 0
    rtcp_out: int = 0
    remote_fraction_lost: int = 0  # what the peer's last report says of our stream
    remote_jitter: int = 0
    stun: int = 0  # well-formed STUN messages received on the RTP and RTCP ports
    stun_answered: int = 0  # Binding Success Responses sent

    @property
    def packets_in(self) -> int:
        """Datagrams received on the RTP port, other than STUN."""
        return self.inbound.packets


class _PlainEcho(NamedTuple):
    """What `MediaSession._echo_frame` takes from its codec, echo and socket."""

    codec: AudioCodec
    echo: object
    up: object  # the compiled 1:3 and 3:1 filters
    down: object
    alaw: bool
    payload_type: int
    step: int  # RTP timestamp units a frame
    fileno: int


class MediaSession:
    """RTP for one call. `on_audio` receives the caller's audio as int16 frames at the
    codec's audio rate, `rate` (8 kHz for G.711, 16 kHz for G.722, 24 kHz for Opus);
    `play` queues agent audio at 24 kHz, `play_phone` at 8 kHz, `play_pcm` at any."""

    def __init__(
        self,
        key: str,
        endpoint: Endpoint,
        audio: NegotiatedAudio,
        *,
        now: float,
        wall: Callable[[], float],
        timeout: float,
        jitter: JitterBuffer,
        recorder: Recorder | None = None,
        on_dtmf: Callable[[DtmfDigit], None] | None = None,
        on_timeout: Callable[[str], None] | None = None,
        on_phase: Callable[[float], None] | None = None,
        compiled: bool = False,
    ) -> None:
        self.key = key
        self.compiled = compiled  # G.711 and the 1:3 / 3:1 FIR on the compiled kernels
        self.endpoint = endpoint
        self.timeout = timeout
        self.jitter = jitter
        self.recorder = recorder
        self.on_dtmf = on_dtmf
        self.on_timeout = on_timeout
        self.on_phase = on_phase
        self.on_audio: Callable[[np.ndarray], None] | None = None
        self.next_tick = math.inf  # when the next scheduled tick is due (the engine sets it)
        self.follow_input = False  # send each tick's output with its input (echo)
        self.ahead = False  # the next tick's input already ran (read-only outside)
        self._in_pcm: np.ndarray | None = None
        # The echo (engine.echo sets it): its `on_audio` and the 1:3 resampler it plays
        # through. While that is the session's `on_audio` and nothing else is asked of it
        # (no queued audio or digits, no recorder, no SRTP), each G.711 frame with the
        # compiled kernels goes in and out in one call (`_echo_frame`), as the ticks would.
        self.echo: tuple[Callable[[np.ndarray], None], Callable[[], Resampler]] | None = None
        self._plain_echo: _PlainEcho | None = None  # `_echo_frame`'s, for this codec and echo
        self._kernels = speed.load("kernels") if compiled else None
        self.wall = wall
        # The compiled path's receive state, which its batch read takes packets into.
        rtpio = speed.load("rtpio") if compiled else None
        self._rx_class: Callable[[], ReceptionStats] = (
            ReceptionStats if rtpio is None else rtpio.ReceptionStats)
        inbound = Inbound if rtpio is None else rtpio.Inbound
        self.inbound: Inbound = inbound(jitter, self._rx_class(), now, FLOOD_RATE, FLOOD_BURST)
        self.stats = MediaStats(self.inbound)
        self.dropped: Counter[str] = Counter()
        self.dtmf = DtmfReceiver()
        self.digits: list[DtmfDigit] = []
        self._dtmf_out: DtmfSender | None = None  # digits being sent; None: none queued
        self._to_call: dict[int, Resampler] = {}  # from a rate played at to `rate`
        self._out = bytearray()  # agent audio at `rate`, int16, waiting to be sent
        self._codec_format: object = None
        self._last_pcm: np.ndarray | None = None
        # The last echoed frame's samples (`_echo_frame`), made `_last_pcm` only when a
        # frame after it needs them (to conceal): most never do.
        self._echoed: bytearray | None = None
        self._lost_run = 0
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._talking = False
        self._octets = 0
        self._stun_tokens = STUN_BURST
        self._stun_at = now
        self._next_rtcp = now + RTCP_INTERVAL
        self.timed_out = False
        self.closed = False
        # Told of a c= line that names a host (a re-INVITE's too), when names are looked up.
        self.on_named_peer: Callable[[str, int], None] | None = None
        self.srtp: SrtpContext | None = None
        # Where RTP goes to be sent with the loop pass's other packets (the compiled
        # I/O's); None: sent at once from the socket.
        self.outgoing: list[Outgoing] | None = None
        self.update(audio)

    # ---- negotiation ------------------------------------------------------------

    def update(self, audio: NegotiatedAudio) -> None:
        """Apply an (re-)negotiated stream: codec, DTMF type, remote address, direction."""
        self.audio = audio
        if audio.srtp is None:
            self.srtp = None
        elif self.srtp is None or self.srtp.keys != audio.srtp:  # same keys: same window
            self.srtp = SrtpContext(audio.srtp)
        fmt = audio.codec
        if fmt != self._codec_format:  # a new coder (its state) only for a new format
            self._codec_format = fmt
            old: AudioCodec | None = getattr(self, "codec", None)
            self.codec: AudioCodec = open_codec(fmt, compiled=self.compiled)
            if old is not None and old.rate != self.codec.rate:  # queued audio is at old's
                self._out.clear()
                self._to_call.clear()
                self._last_pcm = self._echoed = None
            self.jitter.set_clock_rate(self.codec.clock_rate)
            self._frame = self.codec.frame_samples
            # A stateless coder's silence is the same packet every time.
            self._silence = (self.codec.encode(np.zeros(self._frame, np.int16))
                             if isinstance(self.codec, G711) else None)
        remote = (audio.remote_address, audio.remote_port)
        inbound = self.inbound
        if inbound.latched is None or remote != getattr(self, "_sdp_remote", None):
            inbound.latched = None  # a new offer may move the peer: latch again (symmetric RTP)
        self._sdp_remote = remote
        self._remote: Address = remote
        # An address the SDP gave as a host name (or not an address at all) is never looked
        # up: a lookup would block the loop at every packet, on a name the caller chose.
        # Symmetric RTP finds the peer instead: nothing is sent until its first packet.
        self._peer_known = inbound.latched is not None or _is_ip(audio.remote_address)
        # What the compiled read may take without `receive`: the voice payload type, in
        # the clear (and not the telephone-event's type too).
        pt = audio.codec.payload_type
        inbound.pt = pt if self.srtp is None and pt != audio.telephone_event_pt else -1
        inbound.clock_rate = self.codec.clock_rate
        if not self._peer_known and self.on_named_peer is not None:
            self.on_named_peer(*remote)
        self.sending = audio.direction.sends and audio.remote_address != "0.0.0.0"
        self.expect_rtp = audio.direction.receives

    @property
    def peer_known(self) -> bool:
        """Whether RTP has an address to go to (an IP in the SDP, looked up, or latched)."""
        return self._peer_known

    @property
    def sdp_remote(self) -> Address:
        """The address and port the SDP's c= and m= lines gave (a name, perhaps)."""
        return self._sdp_remote

    def peer_resolved(self, host: str, port: int, address: Address) -> None:
        """The c= line's host name was looked up: send there, unless the SDP has moved on
        or the caller's packets already showed where its media is."""
        if self.inbound.latched is None and self._sdp_remote == (host, port):
            self._remote = address
            self._peer_known = True

    # ---- receive ----------------------------------------------------------------

    def readable(self, now: float, *, drain: bool = False) -> None:
        """The RTP socket has datagrams: read one (the loop calls again while there are
        more: no failed read per packet), or with `drain` all of them.

        Each packet's arrival time is the kernel's receive timestamp where the socket
        has them (SO_TIMESTAMPNS): the loop's own wake-up delay is not network jitter,
        and counting it as such would grow the jitter buffer for nothing.
        """
        sock = self.endpoint.rtp
        stamped = self.endpoint.timestamps
        offset = self.wall() - now if stamped else 0.0  # kernel stamps are wall-clock time
        while True:
            try:
                if stamped:
                    data, ancillary, _, addr = sock.recvmsg(2048, _CMSG_SPACE)
                else:
                    data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.dropped["socket_error"] += 1  # ICMP unreachable echoes on Linux
                break
            arrival = now
            if stamped:
                for level, kind, cdata in ancillary:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                        sec, nsec = _TIMESPEC.unpack_from(cdata)
                        arrival = min(now, sec + nsec * 1e-9 - offset)
            self.receive(data, (addr[0], addr[1]), arrival)
            if not drain:
                break
        self.pump()

    def receive(self, data: bytes, addr: Address, now: float,
                parsed: Parsed | str | None = None) -> None:
        """One datagram on the RTP port: RTP, or STUN (RFC 7983). Anything wrong with it
        is dropped and counted. `parsed` is the compiled I/O's reading of `data` (the
        fields parse_rtp gives, or the reason it would raise): used in clear RTP only."""
        if data < STUN_BELOW and self._stun(data, addr, now, False):
            return
        inbound = self.inbound
        inbound.packets += 1
        # Token bucket: a flood costs the flooder, not the call.
        inbound.tokens = min(inbound.burst,
                             inbound.tokens + (now - inbound.token_at) * inbound.rate)
        inbound.token_at = now
        if inbound.tokens < 1.0:
            self.dropped["flood"] += 1
            return
        inbound.tokens -= 1.0
        latched = inbound.latched
        if latched is not None and addr != latched:
            self.dropped["source"] += 1
            return
        fields = self._fields(data, parsed)
        if fields is None:
            return
        pt, marker, sequence, timestamp, ssrc, payload, _ = fields
        audio = self.audio
        if pt != audio.codec.payload_type and pt != audio.telephone_event_pt:
            self.dropped["payload_type"] += 1
            return
        if inbound.ssrc is None:
            inbound.ssrc = ssrc
        elif ssrc != inbound.ssrc:
            inbound.foreign += 1
            if inbound.foreign < SSRC_SWITCH:
                self.dropped["ssrc"] += 1
                return
            # A steady new source from the same address: the peer restarted its stream.
            inbound.ssrc = ssrc
            inbound.rx = self._rx_class()
        inbound.foreign = 0
        if latched is None:
            inbound.latched = addr
            self._remote = addr  # symmetric RTP: answer where the caller sends from
            self._peer_known = True
        inbound.audio += 1
        if inbound.audio == 1 and self.on_phase is not None:
            self.on_phase(now)  # tick just after the caller's packets arrive
        inbound.last = now
        inbound.rx.update(sequence, timestamp, int(now * self.codec.clock_rate))
        if pt == audio.telephone_event_pt:
            digit = self.dtmf.feed(timestamp, marker, payload)
            if digit is not None:
                self.digits.append(digit)
                if self.on_dtmf is not None:
                    self.on_dtmf(digit)
            return
        self.jitter.put(sequence, timestamp, payload, now)

    def _fields(self, data: bytes, parsed: Parsed | str | None) -> Parsed | None:
        """An RTP packet's fields: the compiled I/O's parse, or parse_rtp's (after SRTP).
        None: dropped, and counted under the reason."""
        if parsed is None or self.srtp is not None:
            try:
                # SRTP first (its failures are RtpErrors too: srtp_auth, srtp_replay).
                packet = parse_rtp(data if self.srtp is None else self.srtp.unprotect(data))
            except RtpError as exc:
                self.dropped[exc.reason] += 1
                return None
            return (packet.payload_type, packet.marker, packet.sequence, packet.timestamp,
                    packet.ssrc, packet.payload, packet.csrcs)
        if isinstance(parsed, str):
            self.dropped[parsed] += 1
            return None
        return parsed

    def rtcp_readable(self, now: float) -> None:
        """The RTCP socket has datagrams: RTCP reports, or STUN (RFC 7983)."""
        while True:
            try:
                data, addr = self.endpoint.rtcp.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if data < STUN_BELOW and self._stun(data, (addr[0], addr[1]), now, True):
                continue
            if self.srtp is not None:
                try:
                    data = self.srtp.unprotect_rtcp(data)
                except RtpError as exc:
                    self.dropped["rtcp_" + exc.reason] += 1
                    continue
            try:
                packets = parse_rtcp(data)
            except RtpError as exc:
                self.dropped["rtcp_" + exc.reason] += 1
                continue
            self.stats.rtcp_in += 1
            for p in packets:
                if isinstance(p, SenderReport | ReceiverReport):
                    for block in p.reports:
                        if block.ssrc == self._ssrc:
                            self.stats.remote_fraction_lost = block.fraction_lost
                            self.stats.remote_jitter = block.jitter

    def _stun(self, data: bytes, addr: Address, now: float, rtcp: bool) -> bool:
        """A STUN message on the RTP (or RTCP) port: counted, and a Binding Request from
        the call's peer answered from the same socket. False when `data` is not a
        well-formed STUN message (it is then dropped as malformed RTP or RTCP)."""
        try:
            message = parse_stun(data)
        except StunError:
            return False
        self.stats.stun += 1
        # Only the peer's own address is answered (as the SDP named it, or as latched),
        # and at a bounded rate: a spoofed source cannot make the port an amplifier.
        offset = 1 if rtcp else 0
        host, port = addr
        sdp, latched = self._sdp_remote, self.inbound.latched
        if not ((host == sdp[0] and port == sdp[1] + offset)
                or (latched is not None and host == latched[0]
                    and port == latched[1] + offset)):
            return True
        answer = binding_response(message, host, port)
        if answer is None:
            return True
        self._stun_tokens = min(STUN_BURST,
                                self._stun_tokens + (now - self._stun_at) * STUN_RATE)
        self._stun_at = now
        if self._stun_tokens < 1.0:
            return True
        self._stun_tokens -= 1.0
        sock = self.endpoint.rtcp if rtcp else self.endpoint.rtp
        if self.outgoing is not None and not rtcp:  # in its place among the RTP sent
            self.outgoing.append((self, sock.fileno(), answer, addr, -1))
            self.stats.stun_answered += 1
            return True
        try:
            sock.sendto(answer, addr)
            self.stats.stun_answered += 1
        except OSError:
            self.dropped["stun_send_error"] += 1
        return True

    # ---- the 20 ms tick ---------------------------------------------------------

    def pump(self) -> None:
        """Run the next tick's input now if its frame is here (and with `follow_input` its
        output): a frame on time waits for nothing. Never more than one tick ahead."""
        if not self.ahead and self.jitter.ready(self.next_tick):
            self.ahead = True
            if not self._take_in(self.next_tick) and self.follow_input:
                self._give_out()

    def tick(self, now: float) -> None:
        """The scheduled tick: whatever of its input and output has not run ahead."""
        if self.ahead:
            self.ahead = False
            if not self.follow_input:
                self._give_out()
        elif not self._take_in(now):
            self._give_out()
        if now >= self._next_rtcp:
            self._send_rtcp(now)
        if (self.timeout > 0 and self.expect_rtp and not self.timed_out
                and now - self.inbound.last > self.timeout):
            self.timed_out = True
            if self.on_timeout is not None:
                self.on_timeout(f"no RTP for {self.timeout:g} s")

    def _take_in(self, now: float) -> bool:
        """One frame in: decoded, or concealed, to `on_audio`. True when the echo's
        shortcut sent its output too (`_give_out` has nothing left to do)."""
        frame = self.jitter.get(now)
        pcm: np.ndarray | None = None
        if frame.payload is not None and self.echo is not None and self._echo_frame(
                frame.payload):
            return True
        if self._echoed is not None:
            self._last_pcm, self._echoed = np.frombuffer(self._echoed, np.int16), None
        if frame.payload is not None:
            pcm = self.codec.decode(frame.payload)
            if pcm is None:  # does not decode: counted, and concealed like a lost one
                self.dropped["undecodable"] += 1
                self._lost_run += 1
                pcm = self.codec.conceal(self._last_pcm, self._lost_run)
            else:
                self._last_pcm = pcm
                self._lost_run = 0
        elif frame.lost or (frame.buffering and self._last_pcm is not None):
            # A gap, or a stall while the buffer grows: conceal rather than go silent.
            self._lost_run += 1
            pcm = self.codec.conceal(self._last_pcm, self._lost_run)
        self._in_pcm = pcm
        if pcm is not None and self.on_audio is not None:
            self.on_audio(pcm)
        return False

    def _echo_frame(self, payload: bytes) -> bool:
        """The echo of one G.711 frame in one compiled call: decode, 1:3 and 3:1 through
        the echo's own resamplers, encode, RTP header; queued to `outgoing` with the
        counters, sequence and timestamp `_take_in` and `_give_out` would leave. False
        (nothing done) when the session is not in that plain state."""
        echo, codec = self.echo, self.codec
        kernels = self._kernels
        if (echo is None or self.on_audio is not echo[0] or not self.follow_input
                or kernels is None or not isinstance(codec, G711)
                or len(payload) != self._frame or self._out or self._dtmf_out is not None
                or self.recorder is not None or self.srtp is not None
                or not self.sending or not self._peer_known or self.outgoing is None):
            return False
        plain = self._plain_echo
        if plain is None or plain[0] is not codec or plain[1] is not echo:
            # What a frame's echo takes from the codec, the echo and the socket: the same
            # until the codec (and with it the resamplers) or the echo changes.
            up = echo[1]()._kernel
            down = self._resampler_from(MODEL_RATE)._kernel
            if up is None or down is None:
                return False
            plain = self._plain_echo = _PlainEcho(
                codec, echo, up, down, codec.name == "PCMA", codec.payload_type,
                codec.timestamp_step, self.endpoint.rtp.fileno())
        done = kernels.echo_frame(
            plain.up, plain.down, plain.alaw, payload, plain.payload_type, self._seq,
            self._ts, self._ssrc, not self._talking)
        if done is None:
            return False
        self._echoed, data = done
        self._in_pcm = None  # read only with a recorder, which takes no shortcut
        self._lost_run = 0
        self._talking = True
        size = len(payload)
        self.outgoing.append((self, plain.fileno, data, self._remote, size))
        self.stats.packets_out += 1
        self._octets += size
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + plain.step) & 0xFFFFFFFF
        return True

    def _give_out(self) -> None:
        """One frame out, and the tick's pair (in, out) to the recorder."""
        out = self._send_frame()
        if self.recorder is not None:
            pcm = self._in_pcm
            self.recorder.frame(pcm if pcm is not None else np.zeros(self._frame, np.int16),
                                out)

    @property
    def rate(self) -> int:
        """The call's audio rate: `on_audio`'s frames and the recording's."""
        return self.codec.rate

    def play(self, pcm24: np.ndarray) -> None:
        """Queue agent audio (24 kHz int16) to be sent in paced 20 ms packets."""
        self.play_pcm(pcm24, MODEL_RATE)

    def play_phone(self, pcm8: np.ndarray) -> None:
        """Queue agent audio at 8 kHz."""
        self.play_pcm(pcm8, PHONE_RATE)

    def play_pcm(self, pcm: np.ndarray, rate: int) -> None:
        """Queue audio at `rate`, converted to the call's rate (a stream per source rate)."""
        if rate != self.codec.rate:
            pcm = self._resampler_from(rate).process(pcm)
        self._out += pcm.astype(np.int16, copy=False).tobytes()

    def _resampler_from(self, rate: int) -> Resampler:
        """The stream that converts audio played at `rate` to the call's."""
        resampler = self._to_call.get(rate)
        if resampler is None:
            resampler = self._to_call[rate] = Resampler(rate, self.codec.rate,
                                                        compiled=self.compiled)
        return resampler

    def clear_playout(self) -> None:
        """Drop queued agent audio (barge-in)."""
        self._out.clear()

    @property
    def last_rx(self) -> float:
        """When its last RTP packet arrived (the kernel's receive time where there is
        one), on the session's clock; when it started before the first."""
        return self.inbound.last

    @property
    def rx(self) -> ReceptionStats:
        """The reception statistics of the stream (RFC 3550 A.1, A.3, A.8)."""
        return self.inbound.rx

    @property
    def queued_ms(self) -> int:
        return len(self._out) // 2 * 1000 // self.codec.rate

    def send_dtmf(self, digits: str, *, duration_ms: int = 100, gap_ms: int = 100,
                  on_done: Callable[[], None] | None = None) -> None:
        """Queue digits to go as RFC 4733 telephone-events in this stream, in place of
        voice while each plays (queued voice waits); `on_done` once the last is out.
        ValueError for bad digits or durations, or when no telephone-event was
        negotiated (nothing is queued then)."""
        if self.audio.telephone_event_pt is None:
            raise ValueError("the call negotiated no telephone-event (RFC 4733)")
        sender = self._dtmf_out
        if sender is None:
            sender = DtmfSender(self.codec.clock_rate, FRAME_MS)
        sender.queue(digits, duration_ms=duration_ms, gap_ms=gap_ms, on_done=on_done)
        self._dtmf_out = sender

    def _send_frame(self) -> np.ndarray | None:
        """Send the next 20 ms of agent audio, or silence; RTP time moves on either way.
        While a digit plays, its telephone-event packet goes instead (`send_dtmf`, RFC
        4733 2.5.1): the stream's SSRC and sequence numbers, the event's own timestamp."""
        out: np.ndarray | None = None
        done: Callable[[], None] | None = None
        sender = self._dtmf_out
        event = sender.tick(self._ts) if sender is not None else None
        if event is not None:
            ts, marker, payload, done = event
            pt = self.audio.telephone_event_pt
            self._talking = False  # voice after the digit starts a new talkspurt
        else:
            if sender is not None and sender.idle:
                self._dtmf_out = None  # nothing queued: ticks cost nothing more
            ts, pt = self._ts, self.codec.payload_type
            size = self._frame * 2
            if len(self._out) >= size:
                out = np.frombuffer(bytes(self._out[:size]), np.int16)
                del self._out[:size]
                payload = self.codec.encode(out)
                marker = not self._talking  # RFC 3551 4.1: first packet of a talkspurt
                self._talking = True
            else:
                payload = (self._silence if self._silence is not None
                           else self.codec.encode(np.zeros(self._frame, np.int16)))
                marker = False
                self._talking = False
        if pt is not None and self.sending and self._peer_known:
            data = build_rtp(pt, self._seq, ts, self._ssrc, payload, marker)
            if self.srtp is not None:
                data = self.srtp.protect(data)
            outgoing = self.outgoing
            if outgoing is not None:  # counted as sent; `unsent` takes it back
                outgoing.append((self, self.endpoint.rtp.fileno(), data, self._remote,
                                 len(payload)))
                self.stats.packets_out += 1
                self._octets += len(payload)
            else:
                try:
                    self.endpoint.rtp.sendto(data, self._remote)
                    self.stats.packets_out += 1
                    self._octets += len(payload)
                except (BlockingIOError, InterruptedError):
                    self.dropped["send_blocked"] += 1
                except OSError:
                    self.dropped["send_error"] += 1
            self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + self.codec.timestamp_step) & 0xFFFFFFFF
        if done is not None:
            done()
        return out

    def unsent(self, size: int, blocked: bool) -> None:
        """A packet queued in `outgoing` was not sent after all (`size`: its payload's;
        -1 for a STUN answer)."""
        if size < 0:
            self.stats.stun_answered -= 1
            self.dropped["stun_send_error"] += 1
            return
        self.stats.packets_out -= 1
        self._octets -= size
        self.dropped["send_blocked" if blocked else "send_error"] += 1

    def _send_rtcp(self, now: float) -> None:
        """A compound SR (or RR when we are not sending) with SDES CNAME (RFC 3550 6.1)."""
        self._next_rtcp = now + RTCP_INTERVAL
        blocks: tuple[ReportBlock, ...] = ()
        if self.inbound.ssrc is not None:
            blocks = (self.rx.report_block(self.inbound.ssrc),)
        report: SenderReport | ReceiverReport
        if self.sending:
            report = SenderReport(self._ssrc, ntp_timestamp(self.wall()), self._ts,
                                  self.stats.packets_out, self._octets, blocks)
        else:
            report = ReceiverReport(self._ssrc, blocks)
        cname = SourceDescription(((self._ssrc, f"sipbridge@{self.endpoint.host}"),))
        if not self._peer_known:
            return
        host, port = self._remote
        data = build_rtcp(report, cname)
        if self.srtp is not None:
            data = self.srtp.protect_rtcp(data)
        try:
            self.endpoint.rtcp.sendto(data, (host, port + 1))
            self.stats.rtcp_out += 1
        except OSError:
            self.dropped["rtcp_send_error"] += 1

    def figures(self) -> MediaFigures:
        """The call's media figures so far: the API's `media` while it runs, its
        timeline's `media` entry and the Prometheus totals when it ends."""
        stats, rx = self.stats, self.rx
        return {
            "packets_in": stats.packets_in, "packets_out": stats.packets_out,
            "lost": rx.missing, "duplicates": rx.duplicates, "reordered": rx.reordered,
            "jitter_ms": round(rx.jitter_ms(self.codec.clock_rate), 2), "late": self.jitter.late,
            "concealed": self.jitter.concealed, "skipped": self.jitter.skipped,
            "stalled": self.jitter.stalled,
            "rtcp_in": stats.rtcp_in, "rtcp_out": stats.rtcp_out,
            "stun": stats.stun, "stun_answered": stats.stun_answered,
            "dtmf": "".join(d.digit for d in self.digits), "dropped": dict(self.dropped),
            "srtp": self.srtp is not None,
        }

    def summary(self) -> str:
        rx = self.rx
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items()))
        return (f"rtp in={self.stats.packets_in} out={self.stats.packets_out} "
                f"lost={rx.missing} dup={rx.duplicates} reordered={rx.reordered} "
                f"jitter={rx.jitter_ms(self.codec.clock_rate):.1f}ms "
                f"late={self.jitter.late} concealed={self.jitter.concealed} "
                f"skipped={self.jitter.skipped} stalled={self.jitter.stalled} "
                f"stun={self.stats.stun} "
                f"dtmf={''.join(d.digit for d in self.digits) or '-'}"
                + (f" dropped: {dropped}" if dropped else ""))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        digit = self.dtmf.flush()
        if digit is not None:
            self.digits.append(digit)
            if self.on_dtmf is not None:
                self.on_dtmf(digit)
        if self.recorder is not None:
            self.recorder.close()


@functools.lru_cache(maxsize=1024)  # the same few peers call again and again
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
