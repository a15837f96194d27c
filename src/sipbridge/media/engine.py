"""All calls' media in one place: the port pool, the one playout scheduler, the sockets
registered with the event loop, and the auto-answer audio modes (echo, play).

Sockets are watched once, when first bound, and stay watched while their endpoint idles
in the pool (what comes to an idle one is read and dropped). A reused endpoint's packets
wait in the kernel from its allocation until its call starts, as a new one's do.

Two ways to read them. The Python path: one `add_reader` per socket, each read by its
session. The compiled path (`MediaConfig.compiled`, sipbridge.media._rtpio): every RTP
and RTCP socket in one epoll set, watched with one `add_reader`; on wake one call reads
every ready RTP socket with its kernel receive times and parses the RTP headers; an
ordinary packet of a call (its stream's voice, in the clear, from its source) goes
through the session's receive state (`MediaSession.inbound`) in C, and the engine only
has the session pump; any other packet the engine hands to its session. What the
sessions send in that loop pass (and in a pass of the playout clock) goes out in one
call at its end.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sipbridge.audiostream import NegotiatedAudio
from sipbridge.media import speed
from sipbridge.media.codecs import audio_rate
from sipbridge.media.dtmf import DtmfDigit
from sipbridge.media.jitterbuffer import JitterBuffer
from sipbridge.media.pacer import PacerDriver, PlayoutScheduler, Tick
from sipbridge.media.ports import Endpoint, PortPool
from sipbridge.media.recorder import Recorder
from sipbridge.media.resample import MODEL_RATE, Resampler, resample
from sipbridge.media.session import MediaSession, Outgoing

log = logging.getLogger("sipbridge.media")

# A call's ticks fall this long after its first packet arrived. Frames on time run as
# soon as they are in (MediaSession.pump), so this is how long a late packet is waited
# for before its frame is concealed, not a delay every frame pays.
PHASE_MARGIN = 0.010
# A send that failed with one of these was blocked (BlockingIOError, InterruptedError).
_BLOCKED = frozenset((errno.EAGAIN, errno.EWOULDBLOCK, errno.EALREADY, errno.EINPROGRESS,
                      errno.EINTR))


class _Watch:
    """The event loop's watch of one endpoint's sockets; it lasts as long as they do."""

    __slots__ = ("early", "endpoint", "on", "pending", "session", "token")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.session: MediaSession | None = None
        self.pending = False  # allocated to a call that has not started
        self.on = False  # its sockets are watched
        self.token = -1  # its place in the compiled path's epoll set (RTP 2t, RTCP 2t+1)
        # The compiled path's read of RTP that came while pending, for the call's start:
        # (arrival, source, data, parsed) each, as `_batch` hands packets to a session.
        self.early: list[tuple[float, Any, bytes | None, Any]] | None = None


@dataclass(frozen=True, slots=True)
class MediaConfig:
    ports: tuple[int, int] = (10000, 20000)
    timeout: float = 30.0  # seconds without RTP before the call ends; 0: never
    jitter_min_ms: int = 0
    jitter_max_ms: int = 200
    recordings: Path | None = None
    # Voice codecs in preference order: what answers pick from an offer, and what we offer.
    codecs: tuple[str, ...] = ("opus", "G722", "PCMU", "PCMA")
    # Looks up a host name in an SDP c= line (without blocking): (host, port) -> (IP,
    # port). None: names are never looked up (the caller's first packet shows the way).
    resolve: Callable[[str, int], Awaitable[tuple[str, int]]] | None = None
    # Calls take the compiled hot path (sipbridge.media.speed.use_compiled decides).
    compiled: bool = False


def load_wav(path: Path) -> np.ndarray:
    """A mono or stereo PCM16 WAV as 24 kHz mono int16 (the model side's format)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files can be played")
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return resample(data, rate, MODEL_RATE)


class MediaEngine:
    """Opens and closes media sessions and drives their 20 ms ticks."""

    def __init__(self, config: MediaConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.pool = PortPool(*config.ports)
        self.scheduler = PlayoutScheduler()
        self.sessions: dict[str, MediaSession] = {}
        self._pending: dict[str, Endpoint] = {}
        self._lookups: set[asyncio.Task[None]] = set()
        self._rtpio = speed.load("rtpio") if config.compiled else None
        # The compiled jitter buffer is the same class, decision for decision.
        compiled_jitter = speed.load("jitter") if config.compiled else None
        self._jitter_class = (JitterBuffer if compiled_jitter is None
                              else compiled_jitter.JitterBuffer)
        self._outgoing: list[Outgoing] = []
        self._watches: list[_Watch | None] = []  # the compiled path's, by token
        self._free_tokens: list[int] = []
        # Tokens of sockets closed since the last batch: a batch read before may still
        # hold their packets, so they are reused only from the next batch on.
        self._retired: list[int] = []
        on_pass = None
        if self._rtpio is not None:
            self._poller = self._rtpio.Poller()
            loop.add_reader(self._poller.fileno(), self._batch)
            on_pass = self._flush
        self.driver = PacerDriver(self.scheduler, self._on_tick, loop, on_pass=on_pass)
        self.driver.start()

    def allocate(self, key: str, host: str) -> Endpoint:
        """Bind the call's RTP port before the SDP answer names it (NoMediaPort if none)."""
        endpoint = self.pool.allocate(host)
        watch = endpoint.watch
        if isinstance(watch, _Watch):
            # Reused: it stays watched, and what comes for it before its call starts (the
            # first packet seen, then the socket is no longer watched) waits for the start:
            # no change to the watch when the call starts in the same turn, as an answer
            # at once does (two epoll_ctl calls saved at each end).
            watch.pending = True
        self._pending[key] = endpoint
        return endpoint

    def start(
        self,
        key: str,
        audio: NegotiatedAudio,
        *,
        on_dtmf: Callable[[DtmfDigit], None] | None = None,
        on_timeout: Callable[[str], None] | None = None,
    ) -> MediaSession:
        """Start RTP for an answered call on the endpoint `allocate` bound for it."""
        endpoint = self._pending.pop(key)
        now = self.loop.time()
        recorder = None
        if self.config.recordings is not None:
            recorder = Recorder(self.config.recordings / f"{key}.wav", audio_rate(audio.codec))
        session = MediaSession(
            key, endpoint, audio, now=now, wall=time.time, timeout=self.config.timeout,
            # Start at the minimum: ticks are phased to the caller's packets, so on a
            # clean path each frame plays ~1 ms after it arrives; late packets grow it.
            jitter=self._jitter_class(clock_rate=audio.codec.clock_rate,
                                      min_delay_ms=self.config.jitter_min_ms,
                                      max_delay_ms=self.config.jitter_max_ms,
                                      initial_delay_ms=self.config.jitter_min_ms),
            recorder=recorder, on_dtmf=on_dtmf, on_timeout=on_timeout,
            on_phase=lambda at: self._rephase(key, at),
            compiled=self.config.compiled,
        )
        self.sessions[key] = session
        if self.config.resolve is not None:
            session.on_named_peer = lambda host, port: self._look_up(session, host, port)
            if not session.peer_known:
                self._look_up(session, *session.sdp_remote)
        self._hand(endpoint, session)
        if self._rtpio is not None:
            session.outgoing = self._outgoing
        self.scheduler.add(key, now + 0.020)
        session.next_tick = now + 0.020
        self.driver.poke()
        watch = endpoint.watch
        if isinstance(watch, _Watch) and watch.early:  # what the compiled read kept for it
            early, watch.early = watch.early, None
            for arrival, source, data, parsed in early:
                if data is None:  # an ICMP error, as `_batch` counts it
                    session.dropped["socket_error"] += 1
                else:
                    session.receive(data, source, arrival, parsed)
            session.pump()
        return session

    def _look_up(self, session: MediaSession, host: str, port: int) -> None:
        """Look up the c= line's host name in the background; the session sends to the
        address once it is known, unless the caller's packets showed the way first."""
        resolve = self.config.resolve
        assert resolve is not None

        async def look_up() -> None:
            try:
                address = await resolve(host, port)
            except OSError as exc:  # no address for it, said why
                log.info("call %s: media address %s not looked up: %s", session.key, host, exc)
                return
            if not session.closed:
                session.peer_resolved(host, port, address)

        task = self.loop.create_task(look_up())
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    def echo(self, session: MediaSession) -> None:
        """Send the caller's audio back through decode, the call's rate -> 24 kHz (the
        model side's) -> the call's rate, encode in the same codec."""
        ups: dict[int, Resampler] = {}

        def up_resampler() -> Resampler:
            rate = session.rate
            return ups.get(rate) or ups.setdefault(
                rate, Resampler(rate, MODEL_RATE, compiled=session.compiled))

        def echo(pcm: np.ndarray) -> None:
            up = up_resampler()
            # One frame in, one out: a frame still queued here came from a stall or a
            # replayed late frame, and keeping it would delay the rest of the call by 20 ms.
            if session.queued_ms >= 20:
                session.clear_playout()
            session.play(up.process(pcm))

        session.on_audio = echo
        session.follow_input = True
        session.echo = (echo, up_resampler)  # the compiled shortcut of a frame's echo

    def bridge(self, a: MediaSession, b: MediaSession) -> None:
        """Join two calls' audio: what each caller says is played to the other (converted
        only where the legs' rates differ), each leg on its own tick grid. A leg that falls
        more than two frames behind drops its backlog rather than delaying the conversation."""

        def join(src: MediaSession, dst: MediaSession) -> None:
            def forward(pcm: np.ndarray) -> None:
                if dst.queued_ms >= 60:
                    dst.clear_playout()
                dst.play_pcm(pcm, src.rate)

            src.on_audio = forward
            src.follow_input = False

        a.clear_playout()  # whatever was queued for either side (an agent's words) goes
        b.clear_playout()
        join(a, b)
        join(b, a)

    def unbridge(self, *sessions: MediaSession) -> None:
        for session in sessions:
            session.on_audio = None
            session.clear_playout()

    def stop(self, key: str) -> MediaSession | None:
        """End a call's media and free its port."""
        endpoint = self._pending.pop(key, None)
        if endpoint is not None:
            self._release(endpoint)
        session = self.sessions.pop(key, None)
        if session is None:
            return None
        self.scheduler.remove(key)
        watch = session.endpoint.watch
        if isinstance(watch, _Watch):
            watch.session = None
            self._attach(watch)
        session.close()
        self._release(session.endpoint)
        return session

    def close(self) -> None:
        for key in list(self.sessions) + list(self._pending):
            self.stop(key)
        self.driver.stop()
        self._flush()
        for endpoint in self.pool.take_idle():
            self._forget(endpoint)
            endpoint.close()
        if self._rtpio is not None and self._poller.fileno() >= 0:
            self.loop.remove_reader(self._poller.fileno())
            self._poller.close()

    # ---- the sockets' watch ------------------------------------------------------

    def _release(self, endpoint: Endpoint) -> None:
        """Back to the pool: kept watched (what comes is dropped), or closed if it is full."""
        if self.pool.full:
            self._flush()  # nothing queued may go out of a closed (or reused) fd
            self._forget(endpoint)
        else:
            self._hand(endpoint, None)
        self.pool.release(endpoint)

    def _hand(self, endpoint: Endpoint, session: MediaSession | None) -> None:
        """What comes to the endpoint now goes to `session` (None: it idles, dropped)."""
        watch = endpoint.watch if isinstance(endpoint.watch, _Watch) else _Watch(endpoint)
        endpoint.watch = watch
        watch.session = session
        watch.pending = False
        if session is None:
            watch.early = None  # its call never started
        if not watch.on:
            self._watch(watch)
        self._attach(watch)

    def _attach(self, watch: _Watch) -> None:
        """The compiled read takes ordinary packets into the watch's session (if any)."""
        if self._rtpio is not None and watch.token >= 0:
            session = watch.session
            self._poller.attach(2 * watch.token, None if session is None else session.inbound)

    def _watch(self, watch: _Watch) -> None:
        rtp, rtcp = watch.endpoint.rtp.fileno(), watch.endpoint.rtcp.fileno()
        if self._rtpio is None:
            self.loop.add_reader(rtp, self._rtp_ready, watch)
            self.loop.add_reader(rtcp, self._rtcp_ready, watch)
        elif watch.token < 0:
            token = self._free_tokens.pop() if self._free_tokens else len(self._watches)
            if token == len(self._watches):
                self._watches.append(None)
            self._watches[token] = watch
            watch.token = token
            self._poller.add(rtp, 2 * token, True)
            self._poller.add(rtcp, 2 * token + 1, False)
        else:
            self._poller.enable(rtp, 2 * watch.token, True, True)
            self._poller.enable(rtcp, 2 * watch.token + 1, False, True)
        watch.on = True

    def _unwatch(self, watch: _Watch) -> None:
        """Stop watching (till `_watch`): its packets stay queued in the kernel."""
        if not watch.on:
            return
        rtp, rtcp = watch.endpoint.rtp.fileno(), watch.endpoint.rtcp.fileno()
        if self._rtpio is None:
            self.loop.remove_reader(rtp)
            self.loop.remove_reader(rtcp)
        else:
            self._poller.enable(rtp, 2 * watch.token, True, False)
            self._poller.enable(rtcp, 2 * watch.token + 1, False, False)
        watch.on = False

    def _forget(self, endpoint: Endpoint) -> None:
        """Its sockets are about to close: out of the loop's (or the epoll set's) watch."""
        watch = endpoint.watch
        if not isinstance(watch, _Watch):
            return
        endpoint.watch = None
        if self._rtpio is None:
            self._unwatch(watch)
        elif watch.token >= 0:
            self._poller.attach(2 * watch.token, None)
            self._poller.remove(endpoint.rtp.fileno())
            self._poller.remove(endpoint.rtcp.fileno())
            self._watches[watch.token] = None
            self._retired.append(watch.token)
            watch.token = -1
        watch.on = False

    def _rtp_ready(self, watch: _Watch) -> None:
        session = watch.session
        if session is not None:
            session.readable(self.loop.time())
        elif watch.pending:
            self._unwatch(watch)  # read once its call starts
        else:
            watch.endpoint.drain()  # idle: a past call's late packets

    def _rtcp_ready(self, watch: _Watch) -> None:
        session = watch.session
        if session is not None:
            session.rtcp_readable(self.loop.time())
        elif watch.pending:
            self._unwatch(watch)
        else:
            watch.endpoint.drain()

    # ---- the compiled path ---------------------------------------------------------

    def _batch(self) -> None:
        """The epoll set is readable: every ready socket read in one call, each packet
        to its session as `MediaSession.readable` would hand it (an ordinary one taken
        in C: its session only pumps); then the sends."""
        now = self.loop.time()
        offset = time.time() - now  # kernel stamps are wall-clock time
        if self._retired:
            self._free_tokens += self._retired
            self._retired.clear()
        watches = self._watches
        for entry in self._poller.receive(now, offset):
            if entry.__class__ is int:  # taken in C: its (attached) session has it
                watches[entry >> 1].session.pump()  # type: ignore[union-attr]
                continue
            token, stamp, addr, data, parsed = entry
            watch = watches[token >> 1]
            if watch is None:
                continue
            session = watch.session
            if token & 1:
                if session is not None:
                    session.rtcp_readable(now)
                elif watch.pending:
                    self._unwatch(watch)  # left in the kernel till its call starts
                else:
                    watch.endpoint.drain()
                continue
            arrival = now if stamp is None else min(now, stamp - offset)
            if session is None:
                if watch.pending:  # kept for its call's start, and the rest left queued
                    if watch.early is None:
                        watch.early = []
                    watch.early.append((arrival, addr, data, parsed))
                    self._unwatch(watch)
                continue  # read while idle: dropped
            if data is None:  # an ICMP error, as session.readable counts it
                session.dropped["socket_error"] += 1
                continue
            session.receive(data, addr, arrival, parsed)
            session.pump()
        if self._outgoing:
            self._flush()

    def _flush(self) -> None:
        """Send what the sessions queued in this pass, in one call."""
        out = self._outgoing
        if not out or self._rtpio is None:
            return
        try:
            for index, code in self._rtpio.send(out):
                item = out[index]
                item[0].unsent(item[4], code in _BLOCKED)
        finally:
            out.clear()

    def _rephase(self, key: str, arrival: float) -> None:
        """Phase the call's ticks on its first packet: each one a little after its frame."""
        self.scheduler.remove(key)
        self.scheduler.add(key, arrival + PHASE_MARGIN)
        self.sessions[key].next_tick = arrival + PHASE_MARGIN
        self.driver.poke()

    def _on_tick(self, tick: Tick) -> None:
        session = self.sessions.get(str(tick.key))
        if session is not None:
            now = self.loop.time()
            if not session.ahead:
                # A packet that came in since the loop last polled may be the one this
                # tick plays: the timer can run before the socket's read callback does.
                # On the compiled path every socket that is readable now is read, in one
                # call, as the read callback would (an ordinary packet taken in C): in a
                # busy pass, many ticks' packets came in meanwhile.
                watch = session.endpoint.watch
                if self._rtpio is None or not isinstance(watch, _Watch) or watch.token < 0:
                    session.readable(now, drain=True)
                else:
                    self._batch()
            session.tick(now)
            session.next_tick = tick.at + self.scheduler.interval
            session.pump()  # a burst may already hold the next tick's frame
