"""Settings: checked by pydantic-settings where read, handed to worker processes as values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from bulkport.config import HANDED_ENV, Settings, get_settings


def test_handed_values_rebuild_the_same_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, lease_seconds=5, api_keys="k1,k2",
                        rate_limit_burst=7, log_format="json")
    again = Settings.from_validated(json.loads(settings.to_json()))
    assert again == settings
    assert isinstance(again.data_dir, Path) and again.upload_dir == tmp_path / "uploads"
    assert again.lease_seconds == 5.0 and again.api_keys == ["k1", "k2"]


def test_handed_settings_win_over_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    handed = Settings(data_dir=tmp_path, batch_size=123)
    monkeypatch.setenv("BULKPORT_BATCH_SIZE", "456")
    monkeypatch.setenv(HANDED_ENV, handed.to_json())
    get_settings.cache_clear()
    try:
        assert get_settings().batch_size == 123
        monkeypatch.delenv(HANDED_ENV)
        get_settings.cache_clear()
        assert get_settings().batch_size == 456
    finally:
        get_settings.cache_clear()


def test_a_process_given_settings_loads_no_pydantic(tmp_path: Path) -> None:
    code = ("import sys; from bulkport.config import get_settings; "
            "import bulkport.resources.users as u; "
            "print(get_settings().data_dir, u.allowed_roles(), "
            "sorted(m for m in sys.modules if m.startswith('pydantic')))")
    env = {HANDED_ENV: Settings(data_dir=tmp_path).to_json(), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == str(tmp_path)
    assert out[-1] == "[]"


def test_rules_are_still_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Settings(workers=-1)
    monkeypatch.setenv("BULKPORT_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        Settings()


def test_model_copy_checks_the_update() -> None:
    settings = Settings()
    assert settings.model_copy(update={"batch_size": 100}).batch_size == 100
    with pytest.raises(ValidationError, match="batch_size"):
        settings.model_copy(update={"batch_size": 0})
