"""The built-in local model: a WebSocket server speaking the subset of OpenAI's Realtime
protocol a phone call needs, offline.

Caller speech is cut into turns by a voice activity detector (`vad`), transcribed with
faster-whisper (`stt`), answered by a dialog policy read from YAML (`policy`) and spoken
with espeak-ng (`tts`). `server.LocalModelServer` ties them together; run it alone with
`python -m sipbridge.localmodel --port N [--policy FILE]`.
"""

from __future__ import annotations
