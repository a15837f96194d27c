"""ApiError's body, the helpers, and pydantic/FastAPI errors turned into OpenAI's messages."""

from __future__ import annotations

from typing import Any, Literal

import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sipbridge.api.errors import ApiError, conflict, invalid_request, not_found, unauthorized
from sipbridge.realtime.errors import describe, from_validation_errors


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["a", "b", "c"]
    name: str = Field(default="x", max_length=3)


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["realtime"]
    count: int = Field(default=1, ge=1, le=10)
    ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    items: list[Inner] = []
    flag: bool = False


def error_for(data: Any, prefix: str = "") -> ApiError:
    with pytest.raises(ValidationError) as info:
        Outer.model_validate(data)
    return invalid_request(info.value.errors(), prefix=prefix)


def test_body_has_all_four_keys() -> None:
    assert ApiError(400, "Bad.").body() == {
        "error": {"message": "Bad.", "type": "invalid_request_error", "param": None, "code": None}
    }
    error = ApiError(503, "Busy.", type="server_error", param="x", code="overloaded")
    assert error.body()["error"] == {
        "message": "Busy.",
        "type": "server_error",
        "param": "x",
        "code": "overloaded",
    }
    assert str(error) == "Busy."


def test_helpers() -> None:
    missing = not_found("call 'rtc_1'")
    assert (missing.status, missing.code, missing.message) == (
        404,
        "not_found",
        "Call 'rtc_1' not found.",
    )
    clash = conflict("Call 'rtc_1' was already accepted.")
    assert (clash.status, clash.code, clash.type) == (409, "invalid_state", "invalid_request_error")
    denied = unauthorized("Incorrect API key provided.")
    assert (denied.status, denied.code, denied.type) == (
        401,
        "invalid_api_key",
        "invalid_request_error",
    )


@pytest.mark.parametrize(
    ("data", "param", "code", "message"),
    [
        ({"type": "realtime", "foo": 1}, "foo", "unknown_parameter", "Unknown parameter: 'foo'."),
        ({}, "type", "missing_required_parameter", "Missing required parameter: 'type'."),
        (
            {"type": "realtime", "items": [{}]},
            "items[0].type",
            "missing_required_parameter",
            "Missing required parameter: 'items[0].type'.",
        ),
        (
            {"type": "transcription"},
            "type",
            "invalid_value",
            "Invalid value: 'transcription'. Supported values are: 'realtime'.",
        ),
        (
            {"type": "realtime", "items": [{"type": "d"}]},
            "items[0].type",
            "invalid_value",
            "Invalid value: 'd'. Supported values are: 'a', 'b', and 'c'.",
        ),
        (
            {"type": "realtime", "count": "5"},
            "count",
            "invalid_type",
            "Invalid type for 'count': expected an integer, but got a string instead.",
        ),
        (
            {"type": "realtime", "flag": 1},
            "flag",
            "invalid_type",
            "Invalid type for 'flag': expected a boolean, but got an integer instead.",
        ),
        (
            {"type": "realtime", "items": {}},
            "items",
            "invalid_type",
            "Invalid type for 'items': expected an array, but got an object instead.",
        ),
        (
            {"type": "realtime", "items": ["a"]},
            "items[0]",
            "invalid_type",
            "Invalid type for 'items[0]': expected an object, but got a string instead.",
        ),
        (
            {"type": "realtime", "count": 0},
            "count",
            "integer_below_min_value",
            (
                "Invalid 'count': integer below minimum value. Expected a value >= 1, "
                "but got 0 instead."
            ),
        ),
        (
            {"type": "realtime", "ratio": 1.5},
            "ratio",
            "decimal_above_max_value",
            (
                "Invalid 'ratio': decimal above maximum value. Expected a value <= 1.0, "
                "but got 1.5 instead."
            ),
        ),
        (
            {"type": "realtime", "items": [{"type": "a", "name": "long"}]},
            "items[0].name",
            "string_above_max_length",
            (
                "Invalid 'items[0].name': string too long. Expected a string with maximum "
                "length 3, but got a string with length 4 instead."
            ),
        ),
    ],
)
def test_pydantic_errors_read_like_openai(
    data: dict[str, Any], param: str, code: str, message: str
) -> None:
    error = error_for(data)
    assert (error.status, error.type) == (400, "invalid_request_error")
    assert (error.param, error.code, error.message) == (param, code, message)


def test_literal_given_a_number_is_a_type_error() -> None:
    error = error_for({"type": 5})
    assert error.code == "invalid_type"
    assert error.message.startswith(
        "Invalid type for 'type': expected a string, but got an integer instead."
    )


def test_prefix_names_the_enclosing_object() -> None:
    error = error_for({"type": "realtime", "bogus": True}, prefix="session")
    assert error.param == "session.bogus"
    assert error.message == "Unknown parameter: 'session.bogus'."


def test_only_the_first_error_is_reported() -> None:
    with pytest.raises(ValidationError) as info:
        Outer.model_validate({"type": "x", "count": "y"})
    assert len(info.value.errors()) == 2
    assert from_validation_errors(info.value.errors()).param == "type"


def test_fastapi_locations_lose_their_source() -> None:
    errors = [{"type": "missing", "loc": ("body", "items", 2, "type"), "msg": "Field required"}]
    assert from_validation_errors(errors).param == "items[2].type"
    errors = [{"type": "missing", "loc": ("query", "call_id"), "msg": "Field required"}]
    assert from_validation_errors(errors).param == "call_id"
    whole = from_validation_errors([{"type": "missing", "loc": ("body",), "msg": "x"}])
    assert whole.param is None
    assert whole.code == "missing_required_parameter"


def test_variant_tags_are_not_parameters() -> None:
    errors = [
        {
            "type": "missing",
            "loc": ("tools", 0, "variant:function", "name"),
            "msg": "Field required",
        }
    ]
    assert from_validation_errors(errors).param == "tools[0].name"


def test_unknown_key_named_like_a_tag_is_kept() -> None:
    errors = [{"type": "extra_forbidden", "loc": ("audio", "variant:x"), "msg": "x", "input": 1}]
    assert from_validation_errors(errors).param == "audio.variant:x"


def test_value_errors_keep_their_message() -> None:
    errors = [{"type": "value_error", "loc": ("target_uri",), "msg": "Value error, bad scheme"}]
    error = from_validation_errors(errors)
    assert (error.param, error.code) == ("target_uri", "invalid_value")
    assert error.message == "Invalid 'target_uri': bad scheme"


def test_empty_error_list_still_gives_a_400() -> None:
    error = invalid_request([])
    assert error.status == 400
    assert error.message


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "null"),
        (True, "a boolean"),
        (3, "an integer"),
        (1.5, "a decimal"),
        ("s", "a string"),
        ([], "an array"),
        ({}, "an object"),
    ],
)
def test_describe(value: object, kind: str) -> None:
    assert describe(value) == kind


def test_through_fastapi_and_the_sdk() -> None:
    """A FastAPI app that answers validation errors with ApiError.body(); the SDK raises
    BadRequestError carrying OpenAI's fields."""
    app = FastAPI()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        error = invalid_request(exc.errors())
        return JSONResponse(error.body(), status_code=error.status)

    @app.post("/v1/things")
    async def things(body: Outer) -> dict[str, str]:
        return {"ok": body.type}

    with TestClient(app) as http:
        reply = http.post("/v1/things", json={"type": "realtime", "items": [{"type": "z"}]})
        assert reply.status_code == 400
        assert reply.json() == {
            "error": {
                "message": "Invalid value: 'z'. Supported values are: 'a', 'b', and 'c'.",
                "type": "invalid_request_error",
                "param": "items[0].type",
                "code": "invalid_value",
            }
        }
        client = openai.OpenAI(
            api_key="k", base_url="http://testserver/v1", http_client=http, max_retries=0
        )
        with pytest.raises(openai.BadRequestError) as info:
            client.post("/things", body={"type": "realtime", "oops": 1}, cast_to=object)
        assert info.value.param == "oops"
        assert info.value.code == "unknown_parameter"
        assert info.value.type == "invalid_request_error"
