"""sipbridge: a self-hosted SIP gateway for realtime voice agents."""

from sipbridge import _compiled

__version__ = "0.1.0"
_compiled.install()  # compiled SIP modules only while they match their source
