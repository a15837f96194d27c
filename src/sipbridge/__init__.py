"""sipbridge: a self-hosted SIP gateway for realtime voice agents."""

__version__ = "0.1.0"
