"""baresip 1.0 as a real phone: run headless in a config directory of its own and driven
over its ``ctrl_tcp`` socket. ``Baresip.call(uri, play, seconds, dtmf)`` dials, plays a
WAV as the caller's voice, optionally sends RFC 4733 digits, hangs up and returns what it
sent and received as a :class:`BaresipCall`; with ``answermode="auto"`` it is a phone
that answers (a human at a transfer target). A baresip caller follows a REFER (RFC 3515)
the way a carrier does: it calls the Refer-To target and reports by NOTIFY.

The demo places its call with it; the integration tests use it as caller and callee."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import soxr

from sipbridge.demo.audio import PHONE_RATE, Pcm, read_wav, to_int16, write_wav
from sipbridge.demo.ctrl import Control, ControlClosed, Message

LOOPBACK = "127.0.0.1"
_HANDED_OUT: set[tuple[str, int]] = set()  # ports this process was already given


def _bindable(host: str, port: int, kind: socket.SocketKind) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def find_free_port(
    host: str = LOOPBACK,
    *,
    tcp: bool = True,
    udp: bool = True,
    offsets: Sequence[int] = (0,),
) -> int:
    """A port on ``host`` that is free for TCP and/or UDP, as is
    ``port + offset`` for each offset (SIPp's media port takes port and
    port + 2). A port is never handed out twice in one process: the kernel may give
    the same free port to two calls in a row before the first caller binds it."""
    kinds = [k for k, on in ((socket.SOCK_STREAM, tcp), (socket.SOCK_DGRAM, udp)) if on]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        with socket.socket(family, kinds[0]) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        if port + max(offsets) > 65535 or any((host, port + off) in _HANDED_OUT for off in offsets):
            continue
        if all(_bindable(host, port + off, k) for off in offsets for k in kinds):
            _HANDED_OUT.update((host, port + off) for off in offsets)
            return port
    raise RuntimeError(f"no free port on {host}")


# --- baresip -----------------------------------------------------------------

BARESIP_MODULES = Path("/usr/lib/baresip/modules")

BARESIP_CONFIG = """\
# baresip 1.0 for sipbridge tests: no sound card, loopback only.
poll_method             epoll
sip_listen              {host}:{sip_port}
net_interface           {host}
call_local_timeout      30
call_max_calls          1

# The caller's voice is a WAV file; what it hears is dumped by sndfile
# (the decode side of the filter chain, before any player). The player is
# aubridge with no matching source: a sink that needs no sound card.
audio_source            aufile,{play}
audio_player            aubridge,sink
audio_alert             aubridge,sink
audio_level             no
ausrc_format            s16
auplay_format           s16
auenc_format            s16
audec_format            s16
jitter_buffer_delay     1-10
rtp_stats               no
rtcp_mux                no

module_path             {modules}
module                  g711.so
module                  g722.so
module                  opus.so
module                  aufile.so
module                  aubridge.so
module                  sndfile.so
module_tmp              account.so
module_app              menu.so
module_app              ctrl_tcp.so

snd_path                {dumps}
ctrl_tcp_listen         {host}:{ctrl_port}
statmode_default        off
ringback_disabled       yes
menu_bell               no
"""

# One account that never registers, offering one codec (plus telephone-event, which
# baresip always adds for RFC 4733 digits).
# Codec: (its name in audio_codecs, baresip's sample rate, channels).
CODECS = {"PCMU": ("pcmu", 8000, 1), "PCMA": ("pcma", 8000, 1),
          "G722": ("G722/16000/1", 16000, 1), "OPUS": ("opus/48000/2", 48000, 2)}
BARESIP_ACCOUNT = (
    "<sip:{user}@{host}>;regint=0;answermode={answermode};ptime=20;audio_codecs={codec}\n"
)


def terminate(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM, then SIGKILL if the process has not exited within `timeout`; its exit code."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            break
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            continue
    return process.returncode


class Peer:
    """A peer process as a context manager: `start` on entry, `stop` on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> int | None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class BaresipError(RuntimeError):
    """baresip did not start, or did not do what it was told; carries its log."""


@dataclass
class BaresipCall:
    """One call placed by :meth:`Baresip.call`.

    ``sent`` is what baresip encoded (sndfile's encode dump) and ``received``
    what it decoded from the peer (the decode dump), both at ``rate``. The
    dumps hold samples only: ``received`` starts with the first packet from
    the peer, so a delay measured on it is the offset within the peer's
    stream, which is the echo latency when the peer sends from the answer on."""

    uri: str
    rate: int
    sent: Pcm
    received: Pcm
    sent_path: Path
    received_path: Path
    established: bool
    close_reason: str
    dtmf_sent: str
    events: list[dict[str, Any]] = field(repr=False)
    call_id: str | None = None  # baresip's id for the call (its events' ``id``)
    since: int = 0  # the index of ``events[0]`` in the phone's :attr:`Baresip.events`


class Baresip(Peer):
    """baresip 1.0, headless, one call at a time, driven over ctrl_tcp.

    ``with Baresip(tmp_path / "baresip") as ua: call = ua.call(uri, wav, 4)``.
    The config directory is ``workdir/config``; ``workdir/baresip.log`` keeps
    its output. Leaving the ``with`` block quits baresip and kills it if it
    does not exit within ``STOP_TIMEOUT``."""

    STOP_TIMEOUT = 3.0
    READY_TIMEOUT = 10.0

    def __init__(
        self, workdir: Path, *, codec: str = "PCMU", user: str = "caller", host: str = LOOPBACK,
        answermode: str = "manual", tls_ca: Path | None = None, tls_cert: Path | None = None,
        mediaenc: str | None = None,
    ) -> None:
        if codec.upper() not in CODECS:
            raise ValueError("codec must be PCMU, PCMA, G722 or opus")
        self.workdir = workdir
        self.codec = codec.upper()
        # aufile wants its file at the codec's rate and channels; so do the dumps come.
        self.codec_name, self.rate, self.channels = CODECS[self.codec]
        self.user = user
        self.host = host
        self.answermode = answermode  # "auto": answers every call (a phone at the target)
        # SIP over TLS: the CA it trusts, and its own certificate and key in one PEM (then
        # it listens for TLS on sip_port + 1 too).
        self.tls_ca = tls_ca
        self.tls_cert = tls_cert
        self.mediaenc = mediaenc  # "srtp-mand": SRTP with SDES keys (its srtp module)
        self.config_dir = workdir / "config"
        self.dumps = workdir / "dumps"
        self.play_path = workdir / "play.wav"
        self.log_path = workdir / "baresip.log"
        self.sip_port = 0
        self.ctrl_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._ctrl: Control | None = None
        self._calls = 0

    # -- lifecycle --

    def write_config(self) -> None:
        """The config, accounts file and directories baresip needs in ``workdir``."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.dumps.mkdir(parents=True, exist_ok=True)
        # SIP takes the port for UDP and TCP (and port + 1 for TLS where built in).
        self.sip_port = find_free_port(self.host, offsets=(0, 1))
        self.ctrl_port = find_free_port(self.host, udp=False)
        (self.config_dir / "config").write_text(
            BARESIP_CONFIG.format(
                host=self.host,
                sip_port=self.sip_port,
                ctrl_port=self.ctrl_port,
                play=self.play_path,
                modules=BARESIP_MODULES,
                dumps=self.dumps,
            )
            + (f"sip_cafile              {self.tls_ca}\n" if self.tls_ca else "")
            + (f"sip_certificate         {self.tls_cert}\n" if self.tls_cert else "")
            + ("module                  srtp.so\n" if self.mediaenc else "")
        )
        (self.config_dir / "accounts").write_text(
            BARESIP_ACCOUNT.format(user=self.user, host=self.host, codec=self.codec_name,
                                   answermode=self.answermode).rstrip("\n")
            + (f";mediaenc={self.mediaenc}\n" if self.mediaenc else "\n")
        )
        # aufile opens the source when a call's audio starts; until a call
        # writes its own, a short silence keeps a stray start harmless.
        write_wav(self.play_path, np.zeros(self.rate // 10, np.int16), self.rate, self.channels)

    def start(self) -> None:
        """Write the config, start baresip and connect to its control socket."""
        binary = shutil.which("baresip")
        if binary is None:
            raise FileNotFoundError("baresip is not installed (Debian package baresip)")
        self.write_config()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [binary, "-f", str(self.config_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + self.READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise BaresipError(f"baresip exited with {self.process.returncode}\n{self.log()}")
            try:
                sock = socket.create_connection((self.host, self.ctrl_port), timeout=0.2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BaresipError(f"no ctrl_tcp on {self.ctrl_port}\n{self.log()}") from None
                time.sleep(0.05)
        sock.settimeout(None)
        self._ctrl = Control(sock)

    def stop(self) -> int | None:
        """Quit baresip (``quit`` command, then SIGTERM, then SIGKILL); its exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None and self._ctrl is not None:
            try:
                self._ctrl.send("quit")
                process.wait(self.STOP_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired):
                pass
        terminate(process, self.STOP_TIMEOUT)
        if self._ctrl is not None:
            self._ctrl.close()  # its events stay readable
        return process.returncode

    def log(self) -> str:
        """What baresip printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- ctrl_tcp (sipbridge.demo.ctrl) --

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event baresip reported on its control socket, in order."""
        return self._ctrl.events if self._ctrl is not None else []

    def _control(self) -> Control:
        if self._ctrl is None or self.process is None:
            raise BaresipError("baresip is not running")
        return self._ctrl

    def _closed(self) -> BaresipError:
        return BaresipError(f"baresip closed its control socket\n{self.log()[-4000:]}")

    def command(self, command: str, params: str | None = None, timeout: float = 5.0) -> str:
        """Run a baresip command (``dial``, ``hangup``, ``sndcode``...); its output."""
        ctrl = self._control()
        try:
            reply = ctrl.reply(ctrl.send(command, params), time.monotonic() + timeout)
        except (ControlClosed, OSError):
            raise self._closed() from None
        if reply is None:
            raise BaresipError(f"no answer to {command} within {timeout:g} s\n{self.log()[-4000:]}")
        if not reply.get("ok", False):
            raise BaresipError(f"{command} {params or ''}: {reply.get('data')}")
        return str(reply.get("data", ""))

    def wait_event(
        self, types: Iterable[str], timeout: float, *, since: int = 0, call_id: str | None = None
    ) -> dict[str, Any] | None:
        """The first event of one of ``types`` (``CALL_ESTABLISHED``...) at or after
        index ``since`` of :attr:`events`, of the call ``call_id`` if given (baresip's
        ``id``), waiting up to ``timeout``; None if none came. Any number of threads may
        wait at once: each sees every event."""
        wanted = set(types)
        return self._wait(lambda e: e.get("type") in wanted
                          and (call_id is None or e.get("id") == call_id),
                          time.monotonic() + timeout, since)

    def _wait(self, match: Callable[[Message], bool], deadline: float,
              since: int) -> dict[str, Any] | None:
        try:
            return self._control().wait(match, deadline, since)
        except ControlClosed:
            raise self._closed() from None

    # -- a call --

    def call(
        self,
        uri: str,
        play: Path | npt.ArrayLike,
        seconds: float,
        *,
        dtmf: str = "",
        dtmf_at: float = 0.5,
        dtmf_gap: float = 0.25,
        answer_timeout: float = 10.0,
    ) -> BaresipCall:
        """Dial ``uri``, send ``play`` (a mono 8 kHz WAV or samples) as the
        caller's voice, hang up ``seconds`` after the answer and return what
        was sent and received.

        ``play`` is padded with silence to ``seconds`` + 1 s, since aufile ends
        the call when its file runs out. ``dtmf`` digits are sent one at a time
        (``sndcode``: RFC 4733 when the answer has telephone-event), the first
        ``dtmf_at`` s after the answer, then every ``dtmf_gap`` s.

        The call's events are those with its baresip ``id``: a call that baresip places
        itself to follow a REFER has an id of its own, and its CALL_CLOSED (a failed
        transfer's, say) is not this call's end."""
        if self.process is None:
            raise BaresipError("baresip is not running")
        self._calls += 1
        samples, rate = self._at_rate(play)
        padded = np.zeros(max(samples.size, int((seconds + 1.0) * rate)), np.int16)
        padded[: samples.size] = samples
        write_wav(self.play_path, padded, rate, self.channels)
        for old in self.dumps.glob("dump-*.wav"):
            old.unlink()

        start = len(self.events)
        earlier = {e.get("id") for e in self.events}
        self.command("dial", uri)
        answer_by = time.monotonic() + answer_timeout
        # The dialed call: the first outgoing one with an id that no earlier event had
        # (baresip's CALL_LOCAL_SDP for the offer comes before the call has an id).
        first = self._wait(lambda e: e.get("direction") == "outgoing" and bool(e.get("id"))
                           and e.get("id") not in earlier, answer_by, start)
        call_id = str(first["id"]) if first is not None else None
        event = None if call_id is None else self._wait(
            lambda e: e.get("id") == call_id
            and e.get("type") in ("CALL_ESTABLISHED", "CALL_CLOSED"), answer_by, start)
        established = event is not None and event["type"] == "CALL_ESTABLISHED"
        sent_digits = ""
        if established:
            answered = time.monotonic()
            for i, digit in enumerate(dtmf):
                pause = answered + dtmf_at + i * dtmf_gap - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                self.command("sndcode", digit)
                sent_digits += digit
            closed = self.wait_event(["CALL_CLOSED"], answered + seconds - time.monotonic(),
                                     since=start, call_id=call_id)
            if closed is None:
                self.command("hangup")
        elif event is None:
            self.command("hangup")  # gives up the unanswered INVITE (CANCEL)
        closed = self.wait_event(["CALL_CLOSED"], 5.0, since=start, call_id=call_id)
        if event is None:
            raise BaresipError(
                f"{uri}: no answer within {answer_timeout:g} s\n{self.log()[-4000:]}"
            )
        if closed is None:
            raise BaresipError(f"{uri}: no CALL_CLOSED within 5 s of the hang-up\n"
                               f"{self.log()[-4000:]}")
        return self._collect(uri, established, str(closed.get("param", "")), sent_digits,
                             self.events[start:], call_id, start)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.sip_port}"

    def prepare(self, play: Path | npt.ArrayLike, seconds: float) -> int:
        """Set what an answering baresip (``answermode="auto"``) says in its next call:
        ``play`` padded with silence to ``seconds``. Returns the event index to pass
        to :meth:`answered`."""
        samples, rate = self._at_rate(play)
        padded = np.zeros(max(samples.size, int(seconds * rate)), np.int16)
        padded[: samples.size] = samples
        write_wav(self.play_path, padded, rate, self.channels)
        for old in self.dumps.glob("dump-*.wav"):
            old.unlink()
        return len(self.events)

    def _at_rate(self, play: Path | npt.ArrayLike) -> tuple[Pcm, int]:
        """What to play (a mono WAV, or samples at 8 kHz) at the codec's rate: aufile
        takes nothing else."""
        samples, rate = read_wav(play) if isinstance(play, Path) else (to_int16(play), PHONE_RATE)
        if rate == PHONE_RATE and self.rate != PHONE_RATE:
            samples, rate = to_int16(soxr.resample(samples.astype(np.float64), rate,
                                                   self.rate)), self.rate
        if rate != self.rate:
            raise ValueError(f"baresip's aufile wants {self.rate} Hz, got {rate} Hz")
        return samples, rate

    def answered(self, since: int, timeout: float) -> BaresipCall:
        """The call an answering baresip took after :meth:`prepare`, once it has ended."""
        self._calls += 1
        answer = self.wait_event(["CALL_ESTABLISHED"], timeout, since=since)
        call_id = str(answer["id"]) if answer is not None and answer.get("id") else None
        closed = self.wait_event(["CALL_CLOSED"], timeout, since=since, call_id=call_id)
        reason = str(closed.get("param", "")) if closed else "(no CALL_CLOSED event)"
        return self._collect("(incoming)", answer is not None, reason, "", self.events[since:],
                             call_id, since)

    def _collect(
        self,
        uri: str,
        established: bool,
        reason: str,
        dtmf: str,
        events: list[dict[str, Any]],
        call_id: str | None,
        since: int,
    ) -> BaresipCall:
        """Move the call's sndfile dumps to ``callN-sent.wav`` and ``callN-received.wav``."""
        paths = {}
        for side, name in (("enc", "sent"), ("dec", "received")):
            target = self.workdir / f"call{self._calls}-{name}.wav"
            found = sorted(self.dumps.glob(f"dump-*-{side}*.wav"), key=os.path.getmtime)
            if found:
                _wait_wav_closed(found[-1])
                found[-1].replace(target)
            else:
                write_wav(target, np.zeros(0, np.int16), PHONE_RATE)
            paths[name] = target
        sent, rate = read_wav(paths["sent"])
        received, _ = read_wav(paths["received"])
        return BaresipCall(
            uri=uri, rate=rate, sent=sent, received=received,
            sent_path=paths["sent"], received_path=paths["received"],
            established=established, close_reason=reason, dtmf_sent=dtmf, events=events,
            call_id=call_id, since=since,
        )  # fmt: skip


def _wait_wav_closed(path: Path, timeout: float = 2.0) -> None:
    """Wait until the writer has closed ``path``: libsndfile writes the RIFF
    size when it closes the file, which baresip does as it frees the call,
    just after it reports CALL_CLOSED."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with path.open("rb") as f:
            head = f.read(8)
            size = f.seek(0, os.SEEK_END)
        if len(head) == 8 and struct.unpack_from("<I", head, 4)[0] == size - 8:
            return
        time.sleep(0.02)
