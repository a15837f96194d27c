"""What the gateway asks of a model when it briefs the person a warm transfer dialed: the
`response.instructions` of that response, in one of two forms, and their reading (the
local model honours both; any other model reads them as plain instructions).

- say this text: the words the application gave as the target's brief, said as they are;
- summary: the model tells the person who is calling and why, summing up the conversation
  so far, and asks whether they can take the call.

Both end by asking the model to call `finish_transfer` once the person has answered.
"""

from __future__ import annotations

DECISION_TOOL = "finish_transfer"

SPEAKING_TO = ("You are now speaking with the person the caller asked to be transferred "
               "to, not with the caller; the caller is on hold and cannot hear you.")
SAY = "Say exactly this to the person, and nothing else: "
SUMMARISE = ("Tell the person briefly who is calling and why, summarising the conversation "
             "so far, and ask whether they can take the call.")
THEN = (f"When the person answers, call {DECISION_TOOL}: connect true if they will take the "
        "call, false if not, and the reason in a few words.")
QUOTE = '"""'


def brief_instructions(brief: str | None) -> str:
    """The `response.instructions` for a brief: a text to say, or None / "summary"."""
    if brief is None or brief == "summary":
        return f"{SPEAKING_TO} {SUMMARISE} {THEN}"
    return f"{SPEAKING_TO} {SAY}{QUOTE}{brief}{QUOTE} {THEN}"


def read_brief(instructions: object) -> tuple[str, str] | None:
    """("say", the text) or ("summary", "") for instructions `brief_instructions` wrote;
    None for any other."""
    if not isinstance(instructions, str) or not instructions.startswith(SPEAKING_TO):
        return None
    at = instructions.find(SAY + QUOTE)
    if at >= 0:
        start = at + len(SAY + QUOTE)
        end = instructions.rfind(QUOTE)
        if end > start:
            return "say", instructions[start:end].strip()
    if SUMMARISE in instructions:
        return "summary", ""
    return None
