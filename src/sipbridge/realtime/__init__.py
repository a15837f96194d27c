"""OpenAI's Realtime protocol as sipbridge speaks it, both as the gateway's sideband and as the
built-in model: the session config, client and server events, error events and ids, and each
call's sideband session."""
