"""The choice between the compiled media path and the Python reference."""

from __future__ import annotations

import pytest

from sipbridge.media import speed


def test_python_never_takes_the_compiled_path() -> None:
    assert speed.use_compiled("python") is False


def test_an_unknown_path_is_refused() -> None:
    with pytest.raises(ValueError, match="media_path must be one of"):
        speed.use_compiled("fast")


def test_compiled_names_the_module_that_is_not_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed, "MODULES", (*speed.MODULES, "absent"))
    assert speed.missing()[-1:] == ["absent"]
    assert speed.use_compiled("auto") is False
    with pytest.raises(speed.MediaPathError, match=r"sipbridge\.media\._absent not built"):
        speed.use_compiled("compiled")


def test_auto_takes_every_built_module() -> None:
    assert speed.missing() == []  # set-up builds them all
    assert speed.use_compiled("auto") is True
    assert speed.use_compiled("compiled") is True
