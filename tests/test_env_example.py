""".env.example lists every setting the service reads."""

from __future__ import annotations

import re
from pathlib import Path

from app.core.settings import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"


def test_every_setting_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M))

    missing = {name.upper() for name in Settings.model_fields} - documented

    assert not missing, f"add to .env.example: {sorted(missing)}"
