"""The realtime session config as pydantic models: the body of the API's accept, and a
`session.update`'s `session`.

The models follow the `openai` SDK's parameter types field by field
(`types/realtime/call_accept_params.py` and the `*_param.py` files it imports), so a config the
SDK builds validates and anything else is refused the way OpenAI refuses it: unknown fields,
wrong literals and wrong JSON types give an error naming the parameter (see
`realtime.errors`).

Every model forbids extra fields and is strict (no "5" for 5, no 1 for true): the SDK sends
JSON, so coercion would only hide client bugs. Unions are tagged with a callable discriminator
(`_pick`) so that an error names one member's field, never a list of every member's errors.
A `null` where the SDK has no `Optional` is taken as "not given".
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sipbridge.realtime.errors import VARIANT_TAG_PREFIX, RealtimeError, from_validation_errors

DEFAULT_MODEL = "gpt-realtime"
DEFAULT_INSTRUCTIONS = ""
DEFAULT_VOICE = "alloy"
DEFAULT_FORMAT: dict[str, Any] = {"type": "audio/pcm", "rate": 24000}
SERVER_VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
SEMANTIC_VAD_DEFAULTS: dict[str, Any] = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}



class StrictModel(BaseModel):
    """A model that refuses unknown fields and converts no JSON kind into another."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _TypeCheck(BaseModel):
    """Base of the members a union routes an object with a missing or unknown `type` to: its
    only field is `type`, so the error is "Missing required parameter: '<x>.type'" or
    "Invalid value: ... Supported values are: ...". Never validates (the tag was unknown)."""

    model_config = ConfigDict(extra="ignore", strict=True)


class _Context(dict[str, int | str | float]):
    """A hashable error context: a `Discriminator` is hashed when the annotation holding it
    becomes part of a Union (`list[Tool] | None`), and a plain dict cannot be."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))


def _tag(name: str) -> Tag:
    return Tag(VARIANT_TAG_PREFIX + name)


def _pick(
    types: Collection[str] = (),
    *,
    obj: str | None = None,
    strings: bool | Callable[[str], bool] = False,
    array: bool = False,
    integer: bool = False,
    expected: str,
) -> Discriminator:
    """Route a union member by the value's JSON kind, and objects by their `type`.

    Tags: "null"; "str" for strings (if `strings`: all, or those it accepts); "list";
    "int"; for objects `obj` (a union with one object member) or the `type` value if in
    `types`, else "?" (the `_TypeCheck` member). Anything else is an `invalid_type` error
    saying what was `expected`.
    """

    def pick(value: Any) -> str | None:
        if value is None:
            return VARIANT_TAG_PREFIX + "null"
        if isinstance(value, BaseModel):  # serialising, or a model passed in
            kind = getattr(value, "type", None)
            if isinstance(kind, str) and kind in types:
                return VARIANT_TAG_PREFIX + kind
            return VARIANT_TAG_PREFIX + (obj or "?")
        if isinstance(value, Mapping):
            if obj is not None:
                return VARIANT_TAG_PREFIX + obj
            kind = value.get("type")
            return VARIANT_TAG_PREFIX + (kind if isinstance(kind, str) and kind in types else "?")
        if isinstance(value, str) and strings:
            if strings is True or (callable(strings) and strings(value)):
                return VARIANT_TAG_PREFIX + "str"
            return None
        if isinstance(value, list) and array:
            return VARIANT_TAG_PREFIX + "list"
        if isinstance(value, int) and not isinstance(value, bool) and integer:
            return VARIANT_TAG_PREFIX + "int"
        return None

    return Discriminator(
        pick,
        custom_error_type="invalid_type",
        custom_error_message=f"Input should be {expected}",
        custom_error_context=_Context(expected=expected),
    )


# --- audio -------------------------------------------------------------------------------


class AudioPCM(StrictModel):
    """16-bit PCM at 24 kHz. `type` is required here (the SDK's TypedDict marks it optional)
    because it tells the formats apart."""

    type: Literal["audio/pcm"]
    rate: Literal[24000] = 24000


class AudioPCMU(StrictModel):
    type: Literal["audio/pcmu"]


class AudioPCMA(StrictModel):
    type: Literal["audio/pcma"]


class _FormatType(_TypeCheck):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"]


AudioFormat = Annotated[
    Annotated[AudioPCM, _tag("audio/pcm")]
    | Annotated[AudioPCMU, _tag("audio/pcmu")]
    | Annotated[AudioPCMA, _tag("audio/pcma")]
    | Annotated[_FormatType, _tag("?")]
    | Annotated[None, _tag("null")],
    _pick(("audio/pcm", "audio/pcmu", "audio/pcma"), expected="an object"),
]


class NoiseReduction(StrictModel):
    strength: float | None = Field(default=None, ge=0)
    type: Literal["near_field", "far_field"] | None = None


class AudioTranscription(StrictModel):
    delay: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None
    keywords: list[str] | None = None
    language: str | None = None
    languages: list[str] | None = None
    model: str | None = None
    prompt: str | None = None


class ServerVad(StrictModel):
    type: Literal["server_vad"]
    create_response: bool | None = None
    idle_timeout_ms: int | None = Field(default=None, ge=0)
    interrupt_response: bool | None = None
    prefix_padding_ms: int | None = Field(default=None, ge=0)
    silence_duration_ms: int | None = Field(default=None, ge=0)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)


class SemanticVad(StrictModel):
    type: Literal["semantic_vad"]
    create_response: bool | None = None
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    interrupt_response: bool | None = None


class _TurnDetectionType(_TypeCheck):
    type: Literal["server_vad", "semantic_vad"]


TurnDetection = Annotated[
    Annotated[ServerVad, _tag("server_vad")]
    | Annotated[SemanticVad, _tag("semantic_vad")]
    | Annotated[_TurnDetectionType, _tag("?")]
    | Annotated[None, _tag("null")],
    _pick(("server_vad", "semantic_vad"), expected="an object or null"),
]


class AudioInput(StrictModel):
    format: AudioFormat = None
    noise_reduction: NoiseReduction | None = None  # null turns it off
    transcription: AudioTranscription | None = None  # null turns it off
    turn_detection: TurnDetection = None  # null turns it off: the app commits turns itself


class VoiceID(StrictModel):
    """A custom voice."""

    id: str


Voice = Annotated[
    Annotated[str, _tag("str")] | Annotated[VoiceID, _tag("voice")] | Annotated[None, _tag("null")],
    _pick(obj="voice", strings=True, expected="a string or an object"),
]


class AudioOutput(StrictModel):
    format: AudioFormat = None
    speed: float | None = Field(default=None, ge=0.25, le=1.5)
    voice: Voice = None


class AudioConfig(StrictModel):
    input: AudioInput | None = None
    output: AudioOutput | None = None


# --- tools -------------------------------------------------------------------------------


class FunctionTool(StrictModel):
    """A function the model may call. The SDK's TypedDict marks every key optional; `type`
    (the union's tag) and `name` (a call cannot be routed without it) are required here."""

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema object, passed through


class McpToolFilter(StrictModel):
    read_only: bool | None = None
    tool_names: list[str] | None = None


class McpApprovalFilter(StrictModel):
    always: McpToolFilter | None = None
    never: McpToolFilter | None = None


McpAllowedTools = Annotated[
    Annotated[list[str], _tag("list")]
    | Annotated[McpToolFilter, _tag("filter")]
    | Annotated[None, _tag("null")],
    _pick(obj="filter", array=True, expected="an array of strings or an object"),
]

McpRequireApproval = Annotated[
    Annotated[Literal["always", "never"], _tag("str")]
    | Annotated[McpApprovalFilter, _tag("filter")]
    | Annotated[None, _tag("null")],
    _pick(obj="filter", strings=True, expected="'always', 'never' or an object"),
]


class McpTool(StrictModel):
    """A remote MCP server's tools (the SDK's `Mcp`). sipbridge validates and passes it on."""

    type: Literal["mcp"]
    server_label: str
    allowed_callers: list[Literal["direct", "programmatic"]] | None = None
    allowed_tools: McpAllowedTools = None
    authorization: str | None = None
    connector_id: (
        Literal[
            "connector_dropbox",
            "connector_gmail",
            "connector_googlecalendar",
            "connector_googledrive",
            "connector_microsoftteams",
            "connector_outlookcalendar",
            "connector_outlookemail",
            "connector_sharepoint",
        ]
        | None
    ) = None
    defer_loading: bool | None = None
    headers: dict[str, str] | None = None
    require_approval: McpRequireApproval = None
    server_description: str | None = None
    server_url: str | None = None
    tunnel_id: str | None = None

    @model_validator(mode="after")
    def _has_server(self) -> McpTool:
        if self.server_url is None and self.connector_id is None and self.tunnel_id is None:
            raise PydanticCustomError(
                "missing_required_parameter",
                "one of 'server_url', 'connector_id' or 'tunnel_id' must be provided.",
            )
        return self


class _ToolType(_TypeCheck):
    type: Literal["function", "mcp"]


Tool = Annotated[
    Annotated[FunctionTool, _tag("function")]
    | Annotated[McpTool, _tag("mcp")]
    | Annotated[_ToolType, _tag("?")],
    _pick(("function", "mcp"), expected="an object"),
]


class ToolChoiceFunction(StrictModel):
    type: Literal["function"]
    name: str


class ToolChoiceMcp(StrictModel):
    type: Literal["mcp"]
    server_label: str
    name: str | None = None


class _ToolChoiceType(_TypeCheck):
    type: Literal["function", "mcp"]


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], _tag("str")]
    | Annotated[ToolChoiceFunction, _tag("function")]
    | Annotated[ToolChoiceMcp, _tag("mcp")]
    | Annotated[_ToolChoiceType, _tag("?")]
    | Annotated[None, _tag("null")],
    _pick(("function", "mcp"), strings=True, expected="a string or an object"),
]


# --- the rest of the session -------------------------------------------------------------


class TracingConfiguration(StrictModel):
    group_id: str | None = None
    metadata: Any = None  # arbitrary JSON, passed through
    workflow_name: str | None = None


Tracing = Annotated[
    Annotated[Literal["auto"], _tag("str")]
    | Annotated[TracingConfiguration, _tag("config")]
    | Annotated[None, _tag("null")],
    _pick(obj="config", strings=True, expected="'auto', an object or null"),
]


class TokenLimits(StrictModel):
    post_instructions: int | None = Field(default=None, ge=0)


class RetentionRatioTruncation(StrictModel):
    type: Literal["retention_ratio"]
    retention_ratio: float = Field(ge=0.0, le=1.0)
    token_limits: TokenLimits | None = None


Truncation = Annotated[
    Annotated[Literal["auto", "disabled"], _tag("str")]
    | Annotated[RetentionRatioTruncation, _tag("retention_ratio")]
    | Annotated[None, _tag("null")],
    _pick(obj="retention_ratio", strings=True, expected="'auto', 'disabled' or an object"),
]


class Prompt(StrictModel):
    """A stored prompt template. `variables` values (strings or input_text / input_image /
    input_file content objects) are rarely used with calls: kept as permissive JSON."""

    id: str
    variables: dict[str, Any] | None = None
    version: str | None = None


class Reasoning(StrictModel):
    effort: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None


MaxOutputTokens = Annotated[
    Annotated[int, Field(ge=1, le=4096), _tag("int")]
    | Annotated[Literal["inf"], _tag("str")]
    | Annotated[None, _tag("null")],
    _pick(strings=lambda s: s == "inf", integer=True, expected="an integer or 'inf'"),
]

_MERGED_OBJECTS = (
    ("audio",),
    ("audio", "input"),
    ("audio", "output"),
    ("audio", "input", "noise_reduction"),
)
_MERGED_IF_SAME_TYPE = (("audio", "input", "turn_detection"),)


def _merge(old: Any, new: Any, path: tuple[str, ...]) -> Any:
    """A `session.update` value laid over the current one (see `SessionConfig.updated`)."""
    mergeable = path in _MERGED_OBJECTS or (
        path in _MERGED_IF_SAME_TYPE
        and isinstance(old, dict)
        and isinstance(new, dict)
        and old.get("type") == new.get("type")
    )
    if not (mergeable and isinstance(old, dict) and isinstance(new, dict)):
        return new
    out = dict(old)
    for key, value in new.items():
        out[key] = _merge(old[key], value, (*path, key)) if key in old else value
    return out


class SessionConfig(StrictModel):
    """A realtime session config: the body of `POST /v1/realtime/calls/{id}/accept` (the SDK's
    `CallAcceptParams`), and with every field but `type` optional, a `session.update`'s
    `session`.

    `sipbridge` is the one field OpenAI does not have: gateway-specific options for this call,
    a JSON object whose keys the gateway documents (an app using only OpenAI's fields never
    sends it). It is not echoed in `session.created` / `session.updated`.
    """

    type: Literal["realtime"]
    audio: AudioConfig | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None
    instructions: str | None = None
    max_output_tokens: MaxOutputTokens = None
    model: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = None
    parallel_tool_calls: bool | None = None
    prompt: Prompt | None = None  # null clears it
    reasoning: Reasoning | None = None
    tool_choice: ToolChoice = None
    tools: list[Tool] | None = None
    tracing: Tracing = None  # null turns tracing off
    truncation: Truncation = None
    sipbridge: dict[str, Any] | None = None

    def updated(self, partial: Mapping[str, Any]) -> SessionConfig:
        """This config with a `session.update` (the dict `validate_session_update` returns)
        applied: a field given replaces the current one, `null` included, except that
        `audio`, `audio.input`, `audio.output` and `audio.input.noise_reduction` are merged
        key by key (OpenAI: omitting noise reduction's strength keeps it), and so is
        `audio.input.turn_detection` while its `type` stays the same."""
        current = self.model_dump(exclude_unset=True)
        merged = {
            k: _merge(current.get(k), v, (k,)) if k in current else v for k, v in partial.items()
        }
        return SessionConfig.model_validate({**current, **merged})

    def session_object(self, *, session_id: str | None = None) -> dict[str, Any]:
        """The session as `session.created` / `session.updated` report it (the SDK's
        `RealtimeSessionCreateRequest`, plus OpenAI's `object` and `id`), defaults filled."""
        data = self.model_dump(exclude_unset=True, exclude={"sipbridge"})

        def given(mapping: Mapping[str, Any], key: str, default: Any) -> Any:
            value = mapping.get(key)
            return default if value is None else value

        audio = data.get("audio") or {}
        audio_in = audio.get("input") or {}
        audio_out = audio.get("output") or {}
        if "turn_detection" in audio_in:  # given, possibly null (off)
            turn = audio_in["turn_detection"]
            if turn is not None:
                defaults = (
                    SERVER_VAD_DEFAULTS if turn["type"] == "server_vad" else (SEMANTIC_VAD_DEFAULTS)
                )
                turn = {**defaults, **turn}
        else:
            turn = dict(SERVER_VAD_DEFAULTS)
        session: dict[str, Any] = {"type": "realtime", "object": "realtime.session"}
        if session_id is not None:
            session["id"] = session_id
        session.update(
            model=given(data, "model", DEFAULT_MODEL),
            output_modalities=given(data, "output_modalities", ["audio"]),
            instructions=given(data, "instructions", DEFAULT_INSTRUCTIONS),
            tools=given(data, "tools", []),
            tool_choice=given(data, "tool_choice", "auto"),
            max_output_tokens=given(data, "max_output_tokens", "inf"),
            tracing=data.get("tracing"),
            truncation=given(data, "truncation", "auto"),
            prompt=data.get("prompt"),
            include=data.get("include"),
            audio={
                "input": {
                    "format": _format(audio_in.get("format")),
                    "transcription": audio_in.get("transcription"),
                    "noise_reduction": audio_in.get("noise_reduction"),
                    "turn_detection": turn,
                },
                "output": {
                    "format": _format(audio_out.get("format")),
                    "voice": given(audio_out, "voice", DEFAULT_VOICE),
                    "speed": given(audio_out, "speed", 1.0),
                },
            },
        )
        for key in ("parallel_tool_calls", "reasoning"):
            if data.get(key) is not None:
                session[key] = data[key]
        return session


def _format(fmt: Mapping[str, Any] | None) -> dict[str, Any]:
    if fmt is None:
        return dict(DEFAULT_FORMAT)
    if fmt["type"] == "audio/pcm":
        return {"type": "audio/pcm", "rate": fmt.get("rate", 24000)}
    return dict(fmt)


_TYPE_HINT = 'Add "type": "realtime" to the session object.'


def validate_session_update(session: Mapping[str, Any]) -> dict[str, Any]:
    """A `session.update` event's `session`, checked like an accept body but every field except
    `type` optional; returns the fields given, normalised. Raises RealtimeError (param
    "session.<field>")."""
    if "type" not in session:
        raise RealtimeError(
            f"Missing required parameter: 'session.type'. {_TYPE_HINT}",
            param="session.type",
            code="missing_required_parameter",
        )
    try:
        config = SessionConfig.model_validate(dict(session))
    except ValidationError as exc:
        raise from_validation_errors(exc.errors(), prefix="session") from None
    return config.model_dump(exclude_unset=True)
