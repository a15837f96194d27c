"""Errors of OpenAI's Realtime protocol, and pydantic validation errors translated into them.

OpenAI reports a bad client event or request as an error object, `{"message", "type", "param",
"code"}`, `param` naming the offending parameter in dotted form (`audio.input.format.type`,
`tools[0].name`) and messages such as "Unknown parameter: 'foo'." A Realtime session sends it
in an `error` event (`sipbridge.realtime.events.error_event`); the HTTP API sends it as a
response body with a status (`sipbridge.api.errors.ApiError`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

VARIANT_TAG_PREFIX = "variant:"
"""Location parts starting with this name a union member, not a parameter: the tags of the
discriminated unions in `sipbridge.realtime.schemas`. They are dropped from `param`."""

# FastAPI prefixes each error location with where the value came from.
_REQUEST_PARTS = frozenset({"body", "query", "path", "header", "cookie"})

_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a decimal",
    "float_parsing": "a decimal",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dataclass_type": "an object",
    "list_type": "an array",
    "tuple_type": "an array",
    "set_type": "an array",
    "none_required": "null",
}

_BOUNDS = {
    "greater_than_equal": ("ge", ">=", "below_min_value"),
    "greater_than": ("gt", ">", "below_min_value"),
    "less_than_equal": ("le", "<=", "above_max_value"),
    "less_than": ("lt", "<", "above_max_value"),
}


class RealtimeError(Exception):
    """OpenAI's error object: what went wrong, its kind, the parameter at fault, a code."""

    def __init__(
        self,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def fields(self) -> dict[str, object]:
        """The error object; all four keys are always present."""
        return {"message": self.message, "type": self.type, "param": self.param,
                "code": self.code}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, type={self.type!r}, "
            f"param={self.param!r}, code={self.code!r})"
        )


def missing(param: str) -> RealtimeError:
    """A required parameter is absent."""
    return RealtimeError(f"Missing required parameter: '{param}'.", param=param,
                         code="missing_required_parameter")


def wrong_type(param: str, expected: str, value: object) -> RealtimeError:
    """A parameter has the wrong JSON kind; `expected` as OpenAI words it ("a string")."""
    return RealtimeError(f"Invalid type for '{param}': expected {expected}, but got "
                         f"{describe(value)} instead.", param=param, code="invalid_type")


def describe(value: object) -> str:
    """The JSON kind of a value, as OpenAI names it ("a string", "an array", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return f"a value of type {type(value).__name__}"


def _show(value: object) -> str:
    """A value as OpenAI echoes it: strings quoted, long ones cut."""
    if isinstance(value, str):
        text = value if len(value) <= 100 else value[:97] + "..."
        return f"'{text}'"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _supported(expected: str) -> str:
    """pydantic's "'a', 'b' or 'c'" written OpenAI's way: "'a', 'b', and 'c'"."""
    head, sep, last = expected.rpartition(" or ")
    if not sep:
        return expected
    return f"{head}, and {last}" if ", " in head else f"{head} and {last}"


def _param(loc: Sequence[Any], prefix: str, *, keep_last: bool) -> str:
    parts = list(loc)
    if parts and parts[0] in _REQUEST_PARTS:
        parts = parts[1:]
    out = prefix
    for i, part in enumerate(parts):
        is_last = i == len(parts) - 1
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(VARIANT_TAG_PREFIX) and not (keep_last and is_last):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


_LENGTHS = frozenset({"string_too_long", "string_too_short", "too_long", "too_short"})


def _union_tag(kind: str, param: str, ctx: Mapping[str, Any]) -> RealtimeError:
    """A union member's tag (`type`) missing or not one of the members'."""
    field = str(ctx.get("discriminator", "type")).strip("'\"")
    param = f"{param}.{field}" if param else field
    if kind == "union_tag_not_found":
        return RealtimeError(f"Missing required parameter: '{param}'.", param=param or None,
                             code="missing_required_parameter")
    supported = _supported(str(ctx.get("expected_tags", "")))
    return RealtimeError(
        f"Invalid value: {_show(ctx.get('tag'))}. Supported values are: {supported}.",
        param=param or None, code="invalid_value",
    )


def _not_a_literal(name: str, value: object, ctx: Mapping[str, Any]) -> tuple[str, str]:
    """Message and code for a value that is none of the allowed literals (a non-string where
    they are all strings is a wrong type)."""
    expected = str(ctx.get("expected", ""))
    literals = [p.strip() for p in expected.replace(" or ", ", ").split(", ")]
    if not isinstance(value, str) and all(p.startswith("'") for p in literals):
        return (
            f"Invalid type for {name}: expected a string, but got {describe(value)} "
            f"instead. Supported values are: {_supported(expected)}.",
            "invalid_type",
        )
    return (
        f"Invalid value: {_show(value)}. Supported values are: {_supported(expected)}.",
        "invalid_value",
    )


def _out_of_bounds(
    kind: str, name: str, value: object, ctx: Mapping[str, Any]
) -> tuple[str, str]:
    """Message and code for a number past one of its bounds."""
    key, op, suffix = _BOUNDS[kind]
    bound = ctx.get(key)
    number = "integer" if isinstance(bound, int) and isinstance(value, int) else "decimal"
    what = "minimum" if suffix.startswith("below") else "maximum"
    return (
        f"Invalid {name}: {number} {suffix.split('_')[0]} {what} value. "
        f"Expected a value {op} {bound}, but got {_show(value)} instead.",
        f"{number}_{suffix}",
    )


def _wrong_length(
    kind: str, name: str, value: object, ctx: Mapping[str, Any]
) -> tuple[str, str]:
    """Message and code for a string or an array too long or too short."""
    longer = kind.endswith("long")
    noun = "a string" if kind.startswith("string") else "an array"
    limit = (
        f"maximum length {ctx.get('max_length')}"
        if longer
        else (f"minimum length {ctx.get('min_length')}")
    )
    size = (
        len(value) if isinstance(value, (str, list, tuple, dict)) else ctx.get("actual_length")
    )
    code = f"{noun.split()[1]}_{'above_max' if longer else 'below_min'}_length"
    return (
        f"Invalid {name}: {noun.split()[1]} too {'long' if longer else 'short'}. "
        f"Expected {noun} with {limit}, but got {noun} with length {size} instead.",
        code,
    )


def from_validation_errors(
    errors: Sequence[Mapping[str, Any]], *, prefix: str = ""
) -> RealtimeError:
    """The error for the first error of a pydantic (or FastAPI) error list.

    `param` is the dotted path of the bad value under `prefix` (e.g. "session" for a
    `session.update`); FastAPI's leading location ("body", "query", ...) is dropped.
    """
    if not errors:
        return RealtimeError("Invalid request.", param=prefix or None, code="invalid_value")
    err = errors[0]
    kind = str(err.get("type", ""))
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    loc: Sequence[Any] = err.get("loc") or ()

    if kind == "json_invalid":
        detail = ctx.get("error") or "invalid JSON"
        return RealtimeError(
            f"We could not parse the JSON body of your request ({detail}). "
            "The body must be a JSON object.",
            code="invalid_json",
        )

    param = _param(loc, prefix, keep_last=kind == "extra_forbidden")
    name = f"'{param}'" if param else "the request body"

    def invalid(message: str, code: str) -> RealtimeError:
        return RealtimeError(message, param=param or None, code=code)

    if kind == "extra_forbidden":
        return invalid(f"Unknown parameter: {name}.", "unknown_parameter")
    if kind == "missing":
        if not param:
            return invalid(
                "Missing request body: send a JSON object.", "missing_required_parameter"
            )
        return invalid(f"Missing required parameter: {name}.", "missing_required_parameter")
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        return _union_tag(kind, param, ctx)
    if kind in ("literal_error", "enum") or (kind == "invalid_value" and "expected" in ctx):
        return invalid(*_not_a_literal(name, value, ctx))
    if kind in _EXPECTED or (kind == "invalid_type" and "expected" in ctx):
        expected = str(ctx["expected"]) if kind == "invalid_type" else _EXPECTED[kind]
        return invalid(
            f"Invalid type for {name}: expected {expected}, but got {describe(value)} instead.",
            "invalid_type",
        )
    if kind in _BOUNDS:
        return invalid(*_out_of_bounds(kind, name, value, ctx))
    if kind in _LENGTHS:
        return invalid(*_wrong_length(kind, name, value, ctx))
    if kind == "string_pattern_mismatch":
        return invalid(
            f"Invalid {name}: string does not match pattern. Expected a string that matches "
            f"the pattern '{ctx.get('pattern')}'.",
            "invalid_value",
        )
    message = str(err.get("msg", "invalid value"))
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    code = kind if kind.startswith(("invalid_", "missing_")) else "invalid_value"
    return invalid(f"Invalid {name}: {message}", code)
