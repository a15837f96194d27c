"""The call-control bodies and the session config, checked against the openai SDK's own types."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from types import UnionType
from typing import Annotated, Any, Literal, Required, Union, get_args, get_origin

import httpx2
import openai
import pytest
from openai.types.realtime import (
    RealtimeFunctionTool,
    RealtimeSessionCreateRequest,
    audio_transcription_param,
    call_accept_params,
    call_refer_params,
    call_reject_params,
    realtime_audio_config_input_param,
    realtime_audio_config_output_param,
    realtime_audio_config_param,
    realtime_audio_formats_param,
    realtime_audio_input_turn_detection_param,
    realtime_function_tool_param,
    realtime_reasoning_param,
    realtime_session_create_request_param,
    realtime_tools_config_union_param,
    realtime_tracing_config_param,
    realtime_truncation_retention_ratio_param,
)
from openai.types.responses import (
    response_prompt_param,
    tool_choice_function_param,
    tool_choice_mcp_param,
)
from pydantic import BaseModel, ValidationError
from typing_extensions import get_type_hints

from sipbridge.api.errors import ApiError, invalid_request
from sipbridge.api.schemas import ReferBody, RejectBody, refer_target_problem
from sipbridge.realtime import schemas
from sipbridge.realtime.errors import RealtimeError
from sipbridge.realtime.schemas import SessionConfig, validate_session_update

_mcp = realtime_tools_config_union_param
# (SDK TypedDict, our model): the models must have exactly the TypedDict's keys.
PAIRS: list[tuple[type, type[BaseModel]]] = [
    (call_accept_params.CallAcceptParams, SessionConfig),
    (realtime_session_create_request_param.RealtimeSessionCreateRequestParam, SessionConfig),
    (realtime_audio_config_param.RealtimeAudioConfigParam, schemas.AudioConfig),
    (realtime_audio_config_input_param.RealtimeAudioConfigInputParam, schemas.AudioInput),
    (realtime_audio_config_input_param.NoiseReduction, schemas.NoiseReduction),
    (audio_transcription_param.AudioTranscriptionParam, schemas.AudioTranscription),
    (realtime_audio_input_turn_detection_param.ServerVad, schemas.ServerVad),
    (realtime_audio_input_turn_detection_param.SemanticVad, schemas.SemanticVad),
    (realtime_audio_config_output_param.RealtimeAudioConfigOutputParam, schemas.AudioOutput),
    (realtime_audio_config_output_param.VoiceID, schemas.VoiceID),
    (realtime_audio_formats_param.AudioPCM, schemas.AudioPCM),
    (realtime_audio_formats_param.AudioPCMU, schemas.AudioPCMU),
    (realtime_audio_formats_param.AudioPCMA, schemas.AudioPCMA),
    (realtime_function_tool_param.RealtimeFunctionToolParam, schemas.FunctionTool),
    (_mcp.Mcp, schemas.McpTool),
    (_mcp.McpAllowedToolsMcpToolFilter, schemas.McpToolFilter),
    (_mcp.McpRequireApprovalMcpToolApprovalFilter, schemas.McpApprovalFilter),
    (_mcp.McpRequireApprovalMcpToolApprovalFilterAlways, schemas.McpToolFilter),
    (_mcp.McpRequireApprovalMcpToolApprovalFilterNever, schemas.McpToolFilter),
    (tool_choice_function_param.ToolChoiceFunctionParam, schemas.ToolChoiceFunction),
    (tool_choice_mcp_param.ToolChoiceMcpParam, schemas.ToolChoiceMcp),
    (realtime_tracing_config_param.TracingConfiguration, schemas.TracingConfiguration),
    (
        realtime_truncation_retention_ratio_param.RealtimeTruncationRetentionRatioParam,
        schemas.RetentionRatioTruncation,
    ),
    (realtime_truncation_retention_ratio_param.TokenLimits, schemas.TokenLimits),
    (response_prompt_param.ResponsePromptParam, schemas.Prompt),
    (realtime_reasoning_param.RealtimeReasoningParam, schemas.Reasoning),
    (call_reject_params.CallRejectParams, RejectBody),
    (call_refer_params.CallReferParams, ReferBody),
]
EXTENSIONS = {(SessionConfig, "sipbridge"), (ReferBody, "sipbridge")}
# Union tags (and a function's name) are required here though the SDK's TypedDicts say total=False.
STRICTER = {
    (schemas.AudioPCM, "type"),
    (schemas.AudioPCMU, "type"),
    (schemas.AudioPCMA, "type"),
    (schemas.FunctionTool, "type"),
    (schemas.FunctionTool, "name"),
}


def _pair_id(pair: tuple[type, type[BaseModel]]) -> str:
    return f"{pair[0].__name__}-{pair[1].__name__}"


def _required_keys(sdk: type) -> set[str]:
    """The TypedDict's Required[...] keys. `__required_keys__` is empty for these: the SDK's
    modules use postponed annotations, which typing_extensions does not resolve on 3.11."""
    hints = get_type_hints(sdk, include_extras=True)
    required: object = Required
    return {name for name, hint in hints.items() if get_origin(hint) is required}


def test_required_keys_are_read_correctly() -> None:
    assert _required_keys(call_accept_params.CallAcceptParams) == {"type"}
    assert _required_keys(_mcp.Mcp) == {"type", "server_label"}


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
def test_fields_match_the_sdk(pair: tuple[type, type[BaseModel]]) -> None:
    sdk, model = pair
    ours = {name for name in model.model_fields if (model, name) not in EXTENSIONS}
    assert ours == set(get_type_hints(sdk))
    required = _required_keys(sdk)
    for name in ours:
        if (model, name) in STRICTER:
            assert model.model_fields[name].is_required() and name not in required
        else:
            assert model.model_fields[name].is_required() == (name in required), name


_GROUPS = (Union, UnionType, Annotated)


def _literals(tp: Any) -> frozenset[object] | None:
    """The Literal values a type admits; None when it also admits any string (a bare `str`
    among the alternatives, not `str` inside a container such as `list[str]`)."""
    found: set[object] = set()

    def walk(t: Any, alternative: bool) -> bool:
        if t is str:
            return alternative
        origin = get_origin(t)
        if origin is Literal:
            found.update(get_args(t))
            return False
        if origin is None:
            return False
        inner = alternative and origin in _GROUPS
        return any(walk(arg, inner) for arg in get_args(t))

    return None if walk(tp, True) else frozenset(found)


def test_literals_helper() -> None:
    assert _literals(Literal["a", "b"] | None) == frozenset({"a", "b"})
    assert _literals(list[Literal["a"]]) == frozenset({"a"})
    assert _literals(str | Literal["a"]) is None
    assert _literals(list[str]) == frozenset()


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
def test_literal_values_match_the_sdk(pair: tuple[type, type[BaseModel]]) -> None:
    sdk, model = pair
    for name, hint in get_type_hints(sdk).items():
        field = model.model_fields[name]
        assert _literals(field.annotation) == _literals(hint), name


FULL: dict[str, Any] = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "You answer the phone for Acme. Be brief.",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "noise_reduction": {"type": "near_field", "strength": 0.5},
            "transcription": {
                "model": "gpt-4o-transcribe",
                "language": "en",
                "languages": ["en", "de"],
                "keywords": ["sipbridge"],
                "prompt": "Names of Acme products.",
                "delay": "low",
            },
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.6,
                "prefix_padding_ms": 200,
                "silence_duration_ms": 400,
                "idle_timeout_ms": 6000,
                "create_response": True,
                "interrupt_response": False,
            },
        },
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.1},
    },
    "include": ["item.input_audio_transcription.logprobs"],
    "max_output_tokens": 1024,
    "output_modalities": ["audio"],
    "parallel_tool_calls": False,
    "prompt": {
        "id": "pmpt_123",
        "version": "2",
        "variables": {"name": "Ada", "doc": {"type": "input_text", "text": "FAQ"}},
    },
    "reasoning": {"effort": "low"},
    "tool_choice": {"type": "function", "name": "transfer_call"},
    "tools": [
        {
            "type": "function",
            "name": "transfer_call",
            "description": "Transfer the caller to a human.",
            "parameters": {
                "type": "object",
                "properties": {"to": {"type": "string"}},
                "required": ["to"],
            },
        },
        {
            "type": "mcp",
            "server_label": "crm",
            "server_url": "https://mcp.example.com/sse",
            "server_description": "Customer records.",
            "authorization": "token",
            "headers": {"X-Tenant": "acme"},
            "allowed_callers": ["direct"],
            "allowed_tools": {"read_only": True, "tool_names": ["lookup"]},
            "require_approval": {
                "always": {"tool_names": ["delete"]},
                "never": {"read_only": True},
            },
            "defer_loading": False,
        },
        {
            "type": "mcp",
            "server_label": "drive",
            "connector_id": "connector_googledrive",
            "allowed_tools": ["search"],
            "require_approval": "never",
        },
        {"type": "mcp", "server_label": "private", "tunnel_id": "tun_1"},
    ],
    "tracing": {"workflow_name": "support", "group_id": "g1", "metadata": {"k": "v"}},
    "truncation": {
        "type": "retention_ratio",
        "retention_ratio": 0.8,
        "token_limits": {"post_instructions": 5000},
    },
}


# The other members of each union, for the fields FULL cannot hold at the same time.
VARIANTS: dict[str, Any] = {
    "type": "realtime",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm"},
            "turn_detection": {
                "type": "semantic_vad",
                "eagerness": "high",
                "create_response": True,
                "interrupt_response": True,
            },
        },
        "output": {"voice": {"id": "voice_1234"}},
    },
    "tool_choice": {"type": "mcp", "server_label": "crm", "name": "lookup"},
    "tracing": "auto",
    "truncation": "disabled",
    "output_modalities": ["text"],
    "max_output_tokens": "inf",
}


def _key_paths(value: Any, path: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            paths |= {sub} | _key_paths(item, sub)
    elif isinstance(value, list):
        for item in value:
            paths |= _key_paths(item, f"{path}[]")
    return paths


def test_full_config_uses_every_documented_field() -> None:
    """FULL and VARIANTS together set every key of every paired TypedDict."""
    keys = {p.rsplit(".", 1)[-1] for p in _key_paths(FULL) | _key_paths(VARIANTS)}
    for sdk, model in PAIRS:
        if model in (RejectBody, ReferBody):
            continue
        assert set(sdk.__annotations__) <= keys, sdk.__name__


def test_full_config_validates_unchanged() -> None:
    config = SessionConfig.model_validate(copy.deepcopy(FULL))
    assert config.model_dump(exclude_unset=True) == FULL


def _sdk_client(seen: list[tuple[str, Any]]) -> openai.OpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append((request.url.path, json.loads(request.content) if request.content else None))
        return httpx2.Response(200)

    transport = httpx2.MockTransport(handler)
    return openai.OpenAI(
        api_key="k", base_url="http://gw/v1", http_client=httpx2.Client(transport=transport)
    )


def test_bodies_the_sdk_sends_validate() -> None:
    seen: list[tuple[str, Any]] = []
    client = _sdk_client(seen)
    params = {k: v for k, v in FULL.items() if k != "type"}
    client.realtime.calls.accept("rtc_1", type="realtime", **params)
    client.realtime.calls.accept("rtc_1", type="realtime")
    client.realtime.calls.reject("rtc_1")
    client.realtime.calls.reject("rtc_1", status_code=486)
    client.realtime.calls.refer("rtc_1", target_uri="tel:+14155550123")
    client.realtime.calls.refer("rtc_1", target_uri="sip:agent@example.com")
    (_, full), (_, minimal), (_, reject), (_, busy), (_, tel), (_, sip) = seen
    assert SessionConfig.model_validate(full).model_dump(exclude_unset=True) == FULL
    assert SessionConfig.model_validate(minimal).model_dump(exclude_unset=True) == {
        "type": "realtime"
    }
    assert RejectBody.model_validate(reject).status_code == 603
    assert RejectBody.model_validate(busy).status_code == 486
    assert ReferBody.model_validate(tel).target_uri == "tel:+14155550123"
    assert ReferBody.model_validate(sip).target_uri == "sip:agent@example.com"


def _sdk_session(session: dict[str, Any]) -> RealtimeSessionCreateRequest:
    """Validate with the SDK and check no key lands in its model as an unknown extra."""
    parsed = RealtimeSessionCreateRequest.model_validate(session)
    assert set(session) - {"object", "id"} <= set(RealtimeSessionCreateRequest.model_fields)
    assert parsed.audio is not None and parsed.audio.input is not None
    assert parsed.audio.output is not None
    assert not parsed.audio.input.model_extra and not parsed.audio.output.model_extra
    return parsed


def test_session_object_defaults() -> None:
    session = SessionConfig(type="realtime").session_object()
    assert session == {
        "type": "realtime",
        "object": "realtime.session",
        "model": "gpt-realtime",
        "output_modalities": ["audio"],
        "instructions": "",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": schemas.SERVER_VAD_DEFAULTS,
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": "alloy",
                "speed": 1.0,
            },
        },
    }
    parsed = _sdk_session(session)
    assert parsed.type == "realtime" and parsed.max_output_tokens == "inf"


def test_session_object_of_full_config_keeps_everything() -> None:
    session = SessionConfig.model_validate(FULL).session_object(session_id="sess_1")
    assert session["id"] == "sess_1"
    for key, value in FULL.items():
        assert session[key] == value, key
    parsed = _sdk_session(session)
    assert parsed.tools is not None and isinstance(parsed.tools[0], RealtimeFunctionTool)
    assert parsed.tools[0].name == "transfer_call"
    assert parsed.audio is not None and parsed.audio.input is not None
    turn = parsed.audio.input.turn_detection
    assert turn is not None and turn.type == "server_vad" and turn.idle_timeout_ms == 6000


def test_session_object_fills_variant_defaults() -> None:
    session = SessionConfig.model_validate(VARIANTS).session_object()
    audio_in = session["audio"]["input"]
    assert audio_in["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_in["turn_detection"] == {**schemas.SEMANTIC_VAD_DEFAULTS, "eagerness": "high"}
    assert session["audio"]["output"]["voice"] == {"id": "voice_1234"}
    parsed = _sdk_session(session)
    assert parsed.tracing == "auto" and parsed.truncation == "disabled"
    assert getattr(parsed.tool_choice, "type", None) == "mcp"


def test_turn_detection_null_means_off() -> None:
    config = SessionConfig.model_validate(
        {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
    )
    session = config.session_object()
    assert session["audio"]["input"]["turn_detection"] is None
    _sdk_session(session)


def test_sipbridge_extension_is_accepted_but_not_reported() -> None:
    config = SessionConfig.model_validate({"type": "realtime", "sipbridge": {"record": True}})
    assert config.sipbridge == {"record": True}
    assert "sipbridge" not in config.session_object()


def _accept_error(body: dict[str, Any]) -> ApiError:
    with pytest.raises(ValidationError) as info:
        SessionConfig.model_validate(body)
    return invalid_request(info.value.errors())


def _with(**changes: Any) -> dict[str, Any]:
    return {"type": "realtime", **changes}


@pytest.mark.parametrize(
    ("body", "param", "code", "message"),
    [
        ({}, "type", "missing_required_parameter", "Missing required parameter: 'type'."),
        (
            {"type": "transcription"},
            "type",
            "invalid_value",
            "Invalid value: 'transcription'. Supported values are: 'realtime'.",
        ),
        (_with(voice="alloy"), "voice", "unknown_parameter", "Unknown parameter: 'voice'."),
        (
            _with(audio={"input": {"format": {"type": "audio/wav"}}}),
            "audio.input.format.type",
            "invalid_value",
            (
                "Invalid value: 'audio/wav'. Supported values are: 'audio/pcm', 'audio/pcmu', "
                "and 'audio/pcma'."
            ),
        ),
        (
            _with(audio={"input": {"format": {"rate": 24000}}}),
            "audio.input.format.type",
            "missing_required_parameter",
            "Missing required parameter: 'audio.input.format.type'.",
        ),
        (
            _with(audio={"input": {"format": {"type": "audio/pcm", "rate": 8000}}}),
            "audio.input.format.rate",
            "invalid_value",
            "Invalid value: 8000. Supported values are: 24000.",
        ),
        (
            _with(audio={"output": {"format": "g711_ulaw"}}),
            "audio.output.format",
            "invalid_type",
            (
                "Invalid type for 'audio.output.format': expected an object, but got a string "
                "instead."
            ),
        ),
        (
            _with(audio={"input": {"turn_detection": {"type": "server_vad", "eagerness": "low"}}}),
            "audio.input.turn_detection.eagerness",
            "unknown_parameter",
            "Unknown parameter: 'audio.input.turn_detection.eagerness'.",
        ),
        (
            _with(audio={"input": {"turn_detection": {"type": "vad"}}}),
            "audio.input.turn_detection.type",
            "invalid_value",
            "Invalid value: 'vad'. Supported values are: 'server_vad' and 'semantic_vad'.",
        ),
        (
            _with(audio={"output": {"speed": 3}}),
            "audio.output.speed",
            "decimal_above_max_value",
            (
                "Invalid 'audio.output.speed': decimal above maximum value. Expected a value "
                "<= 1.5, but got 3 instead."
            ),
        ),
        (
            _with(tools=[{"type": "function"}]),
            "tools[0].name",
            "missing_required_parameter",
            "Missing required parameter: 'tools[0].name'.",
        ),
        (
            _with(tools=[{"type": "function", "name": "f", "strict": True}]),
            "tools[0].strict",
            "unknown_parameter",
            "Unknown parameter: 'tools[0].strict'.",
        ),
        (
            _with(tools=[{"type": "file_search"}]),
            "tools[0].type",
            "invalid_value",
            "Invalid value: 'file_search'. Supported values are: 'function' and 'mcp'.",
        ),
        (
            _with(tools=[{"type": "mcp", "server_label": "x"}]),
            "tools[0]",
            "missing_required_parameter",
            (
                "Invalid 'tools[0]': one of 'server_url', 'connector_id' or 'tunnel_id' must be "
                "provided."
            ),
        ),
        (
            _with(tool_choice="any"),
            "tool_choice",
            "invalid_value",
            "Invalid value: 'any'. Supported values are: 'none', 'auto', and 'required'.",
        ),
        (
            _with(max_output_tokens="lots"),
            "max_output_tokens",
            "invalid_type",
            (
                "Invalid type for 'max_output_tokens': expected an integer or 'inf', but got "
                "a string instead."
            ),
        ),
        (
            _with(max_output_tokens=5000),
            "max_output_tokens",
            "integer_above_max_value",
            (
                "Invalid 'max_output_tokens': integer above maximum value. Expected a value "
                "<= 4096, but got 5000 instead."
            ),
        ),
        (
            _with(output_modalities=["video"]),
            "output_modalities[0]",
            "invalid_value",
            "Invalid value: 'video'. Supported values are: 'text' and 'audio'.",
        ),
        (
            _with(instructions=["be brief"]),
            "instructions",
            "invalid_type",
            "Invalid type for 'instructions': expected a string, but got an array instead.",
        ),
        (
            _with(parallel_tool_calls="yes"),
            "parallel_tool_calls",
            "invalid_type",
            (
                "Invalid type for 'parallel_tool_calls': expected a boolean, but got a string "
                "instead."
            ),
        ),
        (
            _with(truncation={"type": "retention_ratio"}),
            "truncation.retention_ratio",
            "missing_required_parameter",
            "Missing required parameter: 'truncation.retention_ratio'.",
        ),
    ],
)
def test_bad_accept_bodies(body: dict[str, Any], param: str, code: str, message: str) -> None:
    error = _accept_error(body)
    assert (error.status, error.param, error.code, error.message) == (400, param, code, message)


def test_session_update_needs_type_and_says_how_to_fix_it() -> None:
    with pytest.raises(RealtimeError) as info:
        validate_session_update({"instructions": "hi"})
    error = info.value
    assert (error.param, error.code) == ("session.type", "missing_required_parameter")
    assert error.message.startswith("Missing required parameter: 'session.type'.")
    assert '"type": "realtime"' in error.message


@pytest.mark.parametrize(
    ("session", "param", "code", "message"),
    [
        (
            {"type": "transcription"},
            "session.type",
            "invalid_value",
            "Invalid value: 'transcription'. Supported values are: 'realtime'.",
        ),
        (
            {"type": "realtime", "modalities": ["audio"]},
            "session.modalities",
            "unknown_parameter",
            "Unknown parameter: 'session.modalities'.",
        ),
        (
            {"type": "realtime", "audio": {"output": {"voice": 7}}},
            "session.audio.output.voice",
            "invalid_type",
            (
                "Invalid type for 'session.audio.output.voice': expected a string or an object, "
                "but got an integer instead."
            ),
        ),
    ],
)
def test_session_update_errors_are_prefixed(
    session: dict[str, Any], param: str, code: str, message: str
) -> None:
    with pytest.raises(RealtimeError) as info:
        validate_session_update(session)
    error = info.value
    assert (error.type, error.param, error.code, error.message) == (
        "invalid_request_error", param, code, message)


def test_session_update_returns_only_what_was_given() -> None:
    partial = validate_session_update(
        {"type": "realtime", "audio": {"input": {"turn_detection": None}}, "instructions": "x"}
    )
    assert partial == {
        "type": "realtime",
        "audio": {"input": {"turn_detection": None}},
        "instructions": "x",
    }


def test_updated_merges_audio_and_replaces_the_rest() -> None:
    config = SessionConfig.model_validate(FULL)
    new = config.updated(
        validate_session_update(
            {
                "type": "realtime",
                "audio": {
                    "output": {"voice": "cedar"},
                    "input": {
                        "noise_reduction": {"type": "far_field"},
                        "turn_detection": {"type": "server_vad", "threshold": 0.9},
                    },
                },
                "tools": [],
            }
        )
    )
    data = new.model_dump(exclude_unset=True)
    assert data["audio"]["output"] == {
        "format": {"type": "audio/pcmu"},
        "voice": "cedar",
        "speed": 1.1,
    }
    assert data["audio"]["input"]["noise_reduction"] == {"type": "far_field", "strength": 0.5}
    turn = data["audio"]["input"]["turn_detection"]
    assert turn["threshold"] == 0.9 and turn["silence_duration_ms"] == 400
    assert data["audio"]["input"]["transcription"] == FULL["audio"]["input"]["transcription"]
    assert data["tools"] == []
    assert data["instructions"] == FULL["instructions"]
    assert config.model_dump(exclude_unset=True) == FULL  # the original is untouched


def test_updated_replaces_turn_detection_of_another_type() -> None:
    config = SessionConfig.model_validate(FULL)
    new = config.updated({"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}})
    assert new.session_object()["audio"]["input"]["turn_detection"] == (
        schemas.SEMANTIC_VAD_DEFAULTS
    )
    off = config.updated({"audio": {"input": {"turn_detection": None}}})
    assert off.session_object()["audio"]["input"]["turn_detection"] is None


@pytest.mark.parametrize("code", [400, 486, 600, 603, 699])
def test_reject_accepts_sip_failure_codes(code: int) -> None:
    assert RejectBody.model_validate({"status_code": code}).status_code == code


def test_reject_defaults_to_decline() -> None:
    assert RejectBody.model_validate({}).status_code == 603


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (200, "invalid_value"),
        (399, "invalid_value"),
        (700, "invalid_value"),
        ("486", "invalid_type"),
        (True, "invalid_type"),
        (486.0, "invalid_type"),
    ],
)
def test_reject_refuses_other_codes(status: object, code: str) -> None:
    with pytest.raises(ValidationError) as info:
        RejectBody.model_validate({"status_code": status})
    error = invalid_request(info.value.errors())
    assert (error.status, error.param, error.code) == (400, "status_code", code)
    if code == "invalid_value":
        assert f"{status} is not a SIP failure response" in error.message
        assert "400 to 699" in error.message


@pytest.mark.parametrize(
    "target",
    [
        "tel:+14155550123",
        "tel:+1-415-555-0123",
        "tel:+1.415.555.0123",
        "tel:+1(415)5550123",
        "tel:+14155550123;ext=42",
        "tel:7042;phone-context=example.com",
        "tel:555-0123;phone-context=+1-415",
        "tel:*21#;phone-context=carrier.example",
        "sip:agent@example.com",
        "sip:+14155550123@trunk.example.com;user=phone",
        "sips:agent@example.com:5061",
        "sip:agent@192.0.2.10",
        "sip:queue@[2001:db8::1]",
        "sip:agent@example.com?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2",
        "SIP:agent@example.com",
    ],
)
def test_refer_accepts_tel_and_sip_targets(target: str) -> None:
    assert refer_target_problem(target) is None
    assert ReferBody.model_validate({"target_uri": target}).target_uri == target


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("", "must not be empty"),
        ("x" * 1025, "at most 1024 characters"),
        ("tel:+1415 5550123", "whitespace"),
        ("sip:agent@example.com\r\nX-Injected: 1", "whitespace"),
        ("sip:agent@example.com>;x=<sip:evil@x", "'>'"),
        ("<sip:agent@example.com>", "'<'"),
        ("sip:agent@example.com\x00", "control characters"),
        ("http://example.com/agent", "the scheme is 'http'"),
        ("mailto:agent@example.com", "the scheme is 'mailto'"),
        ("+14155550123", "there is no scheme"),
        ("tel:", "is not a phone number"),
        ("tel:+", "not a global phone number"),
        ("tel:+1-415-CALL-NOW", "not a global phone number"),
        ("tel:5550123", "phone-context"),
        ("tel:+14155550123;phone-context=+1", "takes no 'phone-context'"),
        ("tel:5550123;phone-context=", "tel URI parameter"),
        ("tel:+14155550123;ext=abc", "invalid extension"),
        ("tel:+14155550123;ext=1;ext=2", "appears twice"),
        ("sip:", "not a valid SIP URI"),
        ("sip:agent@", "not a valid SIP URI"),
        ("sip:agent@exa_mple.com", "not a valid SIP URI"),
        ("sip:agent@example.com:99999", "not a valid SIP URI"),
    ],
)
def test_refer_rejects_bad_targets(target: str, says: str) -> None:
    problem = refer_target_problem(target)
    assert problem is not None and says in problem
    with pytest.raises(ValidationError) as info:
        ReferBody.model_validate({"target_uri": target})
    error = invalid_request(info.value.errors())
    assert (error.status, error.param, error.code) == (400, "target_uri", "invalid_value")
    assert error.message.startswith("Invalid 'target_uri': ")
    assert says in error.message


def test_refer_body_fields() -> None:
    missing = _refer_error({})
    assert (missing.param, missing.code) == ("target_uri", "missing_required_parameter")
    assert _refer_error({"target_uri": 5}).code == "invalid_type"
    assert _refer_error({"target_uri": "tel:+1", "to": "x"}).param == "to"
    body = ReferBody.model_validate({"target_uri": "tel:+1", "sipbridge": {"timeout_s": 30}})
    assert body.sipbridge == {"timeout_s": 30}


def _refer_error(body: dict[str, Any]) -> ApiError:
    with pytest.raises(ValidationError) as info:
        ReferBody.model_validate(body)
    return invalid_request(info.value.errors())


def test_models_accept_their_own_instances() -> None:
    """Building a config from model objects (as code does) works and serialises cleanly."""
    build: Callable[..., SessionConfig] = SessionConfig
    config = build(
        type="realtime",
        audio=schemas.AudioConfig(output=schemas.AudioOutput(voice=schemas.VoiceID(id="v1"))),
        tools=[schemas.FunctionTool(type="function", name="f")],
        tool_choice=schemas.ToolChoiceFunction(type="function", name="f"),
    )
    dumped = config.model_dump(exclude_unset=True)
    assert dumped["audio"]["output"]["voice"] == {"id": "v1"}
    assert SessionConfig.model_validate(dumped) == config
