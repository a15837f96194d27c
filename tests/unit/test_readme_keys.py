"""Every config key a user can set is in the README (an undocumented key is a missing
feature)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from sipbridge.config import Config

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            keys += _keys(kind, f"{prefix}{name}.")
    return keys


def test_every_config_key_is_in_the_readme() -> None:
    keys = _keys(Config)
    assert "agent_voice_engine" in keys and len(keys) > 50
    missing = [k for k in keys if not re.search(rf"\b{re.escape(k.rsplit('.', 1)[-1])}\b",
                                                README)]
    assert not missing, f"config keys the README does not name: {missing}"
