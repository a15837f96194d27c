"""The demo (`sipbridge demo`, in `run.py`): one real call, end to end, offline.

A gateway with the built-in local model answers a caller's phone (baresip). The caller
asks for a person; the agent hears it (speech to text), calls its transfer tool, and the
gateway sends a REFER to the caller's side, which honours it the way a carrier does:
it calls the human's phone (another baresip, which answers) and reports the outcome in
NOTIFYs. The demo shows each step as it happens, then the transfer's outcome, the
call's trace and the dashboard's address, and succeeds only if the call went through:
the transfer succeeded, the human's phone answered, and the caller heard the human.

`audio.py` and `baresip.py` (with `ctrl.py`, baresip's control socket) are the phones it
drives; the integration tests use them too.
"""
