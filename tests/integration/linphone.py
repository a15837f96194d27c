"""linphone 5.1 (Debian's ``linphone-cli``) as a real phone in tests: ``linphonec`` run
headless in a directory of its own on 127.0.0.1, driven through its stdin, its console
lines read from stdout, and every SIP message it sent or received read back from its log.

It has no sound card here: in file mode (``soundcard use files``) it sends a WAV as its
microphone (``play``) and writes what it hears to a WAV (``record``). The file it plays
starts over when it ends (and when a held call's stream restarts), so
:meth:`Linphone.play` pads it with silence to the length of the call. The record file is
the core's: every audio stream (a call, the call a REFER makes) appends what it hears to
it, so :meth:`Linphone.heard` returns one recording and the times each stream opened it.
Changing the record file while a call is being held and another placed hung linphonec
5.1 here, so the driver names it once, before any call.

``Linphone(workdir, auto_answer=True)`` answers every call (a phone at a transfer target).
An established call that receives a REFER (RFC 3515) is put on hold (re-INVITE with
``a=sendonly``) and the Refer-To target is called; linphone reports the new call's
progress to the referrer by NOTIFY, as a carrier does.

Facts this driver depends on, found by running linphone 5.1.65 in a container:

- linphonec stays in ``LinphoneGlobalStartup`` (no SIP socket, every call fails with "No
  listening point matching") when it cannot open its database under
  ``$HOME/.local/share/linphone``: HOME is the work directory, and the folder is made.
- ``auto_net_state_mon=0`` (network state monitoring off) is read from ``[sip]`` by
  liblinphone 5.1, not from ``[net]``; with the database folder in place linphonec
  opened its socket here either way, and the driver sets it so that it never waits
  for a network monitor.
- ``[sip] bind_address`` and ``[rtp] bind_address`` keep SIP and the address named in its
  SDP on 127.0.0.1 (without them it offers media on the host's IPv6 address);
  ``guess_hostname=0`` with ``contact`` keeps the host's address out of From;
  ``[sip] use_ipv6=0`` is only read with ``ipv6_migration_done=1``.
- ``[rtp] audio_rtp_port=N`` is a fixed port: each further call takes N + 2, N + 4...
- Its jitter buffer sometimes drops 10 ms of what it plays (and records) about a second
  into a call, so a recording is compared piece by piece, not as one signal. Adaptive
  compensation, which moves the playout more often, is off
  (``audio_adaptive_jitt_comp_enabled=0``): a fixed 60 ms buffer.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sipbridge.demo.audio import PHONE_RATE, Pcm, read_wav, to_int16, write_wav
from sipbridge.demo.baresip import Peer, find_free_port, terminate
from tests.integration.probe import LOOPBACK

LINPHONERC = """\
[sip]
sip_port={sip_port}
sip_tcp_port=0
sip_tls_port=0
bind_address={host}
use_ipv6=0
ipv6_migration_done=1
guess_hostname=0
contact=sip:{user}@{host}
auto_net_state_mon=0
register_only_when_network_is_up=0
inc_timeout=30

[rtp]
audio_rtp_port={rtp_port}
bind_address={host}
audio_adaptive_jitt_comp_enabled=0

[sound]
echocancellation=0

[video]
display=0
capture=0
"""

# A line of linphonec's log that carries a SIP message: what follows it, up to the next
# timestamped line, is the message (belle-sip logs each one whole).
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3}) ")
_SENT = re.compile(r"message sent to \[(\w+)://([^\]]+)\], size: \[\d+\] bytes")
_RECEIVED = re.compile(r"received \[\d+\] new bytes from \[(\w+)://([^\]]+)\]:")


class LinphoneError(RuntimeError):
    """linphonec did not start, or did not do what it was told in time; carries its output."""


@dataclass(frozen=True)
class SipMessage:
    """One SIP message linphone sent or received, as its log shows it."""

    at: float  # Unix time, from the log's millisecond timestamp (local time)
    sent: bool
    transport: str
    peer: str  # host:port it went to or came from
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\r\n", 1)[0].split("\n", 1)[0]

    @property
    def method(self) -> str | None:
        """The request's method, or None for a response."""
        line = self.first_line
        return None if line.startswith("SIP/2.0") else line.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        """The response's status code, or None for a request."""
        line = self.first_line
        return int(line.split(" ", 2)[1]) if line.startswith("SIP/2.0 ") else None

    def header(self, name: str) -> str | None:
        """The first value of header `name` (full name, case-insensitive)."""
        head = self.text.split("\n\n", 1)[0].split("\r\n\r\n", 1)[0]
        for line in head.splitlines()[1:]:
            key, colon, value = line.partition(":")
            if colon and key.strip().lower() == name.lower():
                return value.strip()
        return None

    @property
    def body(self) -> str:
        parts = re.split(r"\r?\n\r?\n", self.text, maxsplit=1)
        return parts[1] if len(parts) > 1 else ""

    @property
    def cseq_method(self) -> str | None:
        cseq = self.header("CSeq")
        return cseq.split()[-1] if cseq else None


@dataclass(frozen=True)
class ConsoleLine:
    """One line linphonec printed, with when it was read."""

    at: float  # Unix time
    text: str


class Linphone(Peer):
    """linphonec 5.1 headless, driven over stdin; one instance per phone.

    ``with Linphone(tmp_path / "linphone") as phone: phone.play(wav, 20); n = phone.call(uri)``.
    ``workdir/linphone.log`` is its full log (SIP messages included), ``workdir/console.txt``
    what it printed. Every wait raises :class:`LinphoneError` when it runs out."""

    READY_TIMEOUT = 10.0
    STOP_TIMEOUT = 3.0

    def __init__(
        self, workdir: Path, *, user: str = "caller", host: str = LOOPBACK,
        auto_answer: bool = False,
    ) -> None:
        self.workdir = workdir
        self.user = user
        self.host = host
        self.auto_answer = auto_answer
        self.rc_path = workdir / "linphonerc"
        self.log_path = workdir / "linphone.log"
        self.console_path = workdir / "console.txt"
        self.record_path = workdir / "heard.wav"
        self.sip_port = 0
        self.rtp_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.lines: list[ConsoleLine] = []
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None
        self._closed = False

    # -- lifecycle --

    @property
    def address(self) -> str:
        """``host:port`` of its SIP socket (UDP)."""
        return f"{self.host}:{self.sip_port}"

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{self.address}"

    def start(self) -> None:
        """Write the config, start linphonec in file mode and wait until its core is on."""
        binary = shutil.which("linphonec")
        if binary is None:
            raise FileNotFoundError("linphonec is not installed (Debian package linphone-cli)")
        home = self.workdir / "home"
        (home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.sip_port = find_free_port(self.host, tcp=False)
        # RTP and RTCP of this call and of two more (a referred call, a retry).
        self.rtp_port = find_free_port(self.host, tcp=False, offsets=range(6))
        self.rc_path.write_text(LINPHONERC.format(
            host=self.host, user=self.user, sip_port=self.sip_port, rtp_port=self.rtp_port))
        env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(home / ".local" / "share"),
                   XDG_CONFIG_HOME=str(home / ".config"))
        command = [binary, "-c", str(self.rc_path), "-d", "6", "-l", str(self.log_path)]
        if self.auto_answer:
            command.append("-a")
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=self.workdir, env=env, start_new_session=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, name="linphonec", daemon=True)
        self._reader.start()
        since = len(self.lines)
        self.send("states global")
        try:
            self.wait_line(r"LinphoneGlobalOn", self.READY_TIMEOUT, since=since)
            self.send("soundcard use files")
            self.wait_line(r"Using wav files instead of soundcard", 5, since=since)
            self.send(f"record {self.record_path}")
        except LinphoneError:
            self.stop()
            raise
        deadline = time.monotonic() + self.READY_TIMEOUT
        while not self.sip_messages_possible():
            if time.monotonic() > deadline:
                self.stop()
                raise LinphoneError(f"linphonec did not bind udp {self.address}\n{self.output()}")
            time.sleep(0.05)

    def sip_messages_possible(self) -> bool:
        """Whether its log says the UDP listening point is up."""
        return f"sip:{self.host}:{self.sip_port};transport=UDP" in self.log()

    def stop(self) -> int | None:
        """``quit``, then SIGTERM, then SIGKILL; its exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            try:
                self.send("quit")
                process.wait(self.STOP_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired, LinphoneError):
                pass
        code = terminate(process, self.STOP_TIMEOUT)
        if self._reader is not None:
            self._reader.join(2.0)
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        return code

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with self.console_path.open("w") as console:
            for raw in self.process.stdout:
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                # The prompt has no newline: it is glued to the next line printed.
                while text.startswith("linphonec> "):
                    text = text[len("linphonec> "):]
                console.write(text + "\n")
                console.flush()
                with self._changed:
                    self.lines.append(ConsoleLine(time.time(), text))
                    self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    # -- commands --

    def send(self, command: str) -> None:
        """One linphonec command line."""
        process = self.process
        if process is None or process.stdin is None or process.poll() is not None:
            raise LinphoneError(f"linphonec is not running\n{self.output()}")
        process.stdin.write(command.encode() + b"\n")
        process.stdin.flush()

    def wait_line(self, pattern: str, timeout: float, *, since: int = 0) -> re.Match[str]:
        """The first console line at or after index `since` that matches `pattern`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = since
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    found = regex.search(line.text)
                    if found:
                        return found
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._changed.wait(left)
        state = "exited" if self._closed else "still running"
        raise LinphoneError(f"linphonec ({state}) printed nothing matching {pattern!r} "
                            f"within {timeout:g} s\n{self.output()}")

    def mark(self) -> int:
        """The index of the next console line, for ``since=``."""
        with self._changed:
            return len(self.lines)

    def play(self, samples: Path | npt.ArrayLike, seconds: float) -> Path:
        """What it says in the next audio stream: a mono 8 kHz WAV (or samples) padded with
        silence to `seconds`, so that linphone's player does not start it over."""
        pcm, rate = (read_wav(samples) if isinstance(samples, Path)
                     else (to_int16(samples), PHONE_RATE))
        if rate != PHONE_RATE:
            raise ValueError(f"linphone's file player wants {PHONE_RATE} Hz, got {rate} Hz")
        padded = np.zeros(max(pcm.size, int(seconds * rate)), np.int16)
        padded[: pcm.size] = pcm
        path = self.workdir / f"play-{time.monotonic_ns()}.wav"
        write_wav(path, padded, rate)
        self.send(f"play {path}")
        return path

    def call(self, uri: str, timeout: float = 5.0) -> int:
        """Place a call; its linphonec id once the INVITE is on its way."""
        since = self.mark()
        self.send(f"call {uri}")
        found = self.wait_line(r"assigned id (\d+)|Call \d+ with .* error", timeout, since=since)
        if found.group(1) is None:
            raise LinphoneError(f"call {uri} failed at once\n{self.output()}")
        return int(found.group(1))

    def wait_connected(self, call: int, timeout: float, *, since: int = 0) -> None:
        """Wait until call `call` is answered and its audio runs."""
        self.wait_line(rf"Media streams established with .* for call {call} ", timeout,
                       since=since)

    def wait_incoming(self, timeout: float, *, since: int = 0) -> int:
        """The id of the next incoming call."""
        found = self.wait_line(r"Receiving new incoming call from .*, assigned id (\d+)",
                               timeout, since=since)
        return int(found.group(1))

    def wait_ended(self, call: int, timeout: float, *, since: int = 0) -> str:
        """Wait until call `call` has ended; the reason linphonec gives."""
        found = self.wait_line(rf"Call {call} with .* ended \((.*)\)\.|Call {call} with .* error",
                               timeout, since=since)
        return found.group(1) or "error"

    def terminate_call(self, call: int | None = None) -> None:
        """Hang up `call` (the current call when None)."""
        self.send("terminate" if call is None else f"terminate {call}")

    # -- what happened --

    def output(self, limit: int = 4000) -> str:
        """The tail of what it printed and of its log, for error messages."""
        console = "\n".join(line.text for line in self.lines)[-limit:]
        return f"--- linphonec console ---\n{console}\n--- linphone log ---\n{self.log()[-limit:]}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def sip_messages(self) -> list[SipMessage]:
        """Every SIP message in its log, in order."""
        messages: list[SipMessage] = []
        lines = self.log().splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            stamp = _LOG_LINE.match(line)
            if not stamp:
                continue
            sent, received = _SENT.search(line), _RECEIVED.search(line)
            match = sent or received
            if match is None:
                continue
            body: list[str] = []
            while i < len(lines) and not _LOG_LINE.match(lines[i]):
                body.append(lines[i])
                i += 1
            text = "\r\n".join(body).strip("\r\n") + "\r\n"
            if not text.startswith(("SIP/2.0", *(m + " " for m in _METHODS))):
                continue
            messages.append(SipMessage(
                at=_log_time(stamp.group(1)), sent=sent is not None,
                transport=match.group(1).lower(), peer=match.group(2), text=text,
            ))  # fmt: skip
        return messages

    def heard(self, timeout: float = 3.0) -> tuple[Pcm, int, list[float]]:
        """What it heard, stream after stream (samples, rate), and when each stream
        opened the file (Unix time, linphone's clock): sample 0 was heard at the first.
        Read once the streams have stopped (linphone writes the WAV's sizes then)."""
        opened = [at for at, path in self.recordings() if path == self.record_path]
        if not opened:
            raise LinphoneError(f"no audio stream opened {self.record_path}\n{self.output()}")
        pcm, rate = read_recording(self.record_path, timeout)
        return pcm, rate, opened

    def recordings(self) -> list[tuple[float, Path]]:
        """Each record file it opened, with when (Unix time), in order."""
        found: list[tuple[float, Path]] = []
        for line in self.log().splitlines():
            stamp = _LOG_LINE.match(line)
            opened = re.search(r"MSFileRec: recording into (\S+)", line)
            if stamp and opened:
                found.append((_log_time(stamp.group(1)), Path(opened.group(1))))
        return found


_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REFER", "NOTIFY", "SUBSCRIBE",
            "INFO", "UPDATE", "PRACK", "MESSAGE", "REGISTER", "PUBLISH")


def _log_time(stamp: str) -> float:
    """linphone's log time (local time, milliseconds) as Unix time."""
    day, ms = stamp[:19], stamp[20:]
    return time.mktime(time.strptime(day, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000


def read_recording(path: Path, timeout: float = 3.0) -> tuple[Pcm, int]:
    """A WAV linphone recorded, once it has closed it (it writes the sizes then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read_wav(path)
        except (OSError, ValueError, EOFError) as exc:
            if time.monotonic() > deadline:
                raise LinphoneError(f"no readable recording at {path}: {exc}") from exc
            time.sleep(0.05)
