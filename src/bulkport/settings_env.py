"""The rules of :class:`bulkport.config.Settings`, checked by pydantic-settings.

The pydantic-settings model is built from the dataclass's fields (type,
default, description, ``ge``/``le``/``gt``), so every setting stays declared
once, in :mod:`bulkport.config`. Reading the environment and checking values
is all pydantic does here; processes that get validated values from their
parent never import this module.
"""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from typing import Annotated, Any

from pydantic import Field, create_model, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bulkport.config import Settings, field_types


class _EnvSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BULKPORT_", extra="ignore")


def _split_list(value: Any) -> Any:
    """Accept a JSON list or comma-separated text (the usual form in an env file)."""
    if isinstance(value, str):
        text = value.strip()
        items = json.loads(text) if text.startswith("[") else text.split(",")
        return [str(i).strip() for i in items if str(i).strip()]
    return value


@lru_cache(maxsize=1)
def model() -> type[BaseSettings]:
    """The pydantic-settings model of :class:`Settings`, named ``Settings`` in its errors."""
    hints = field_types()
    fields: dict[str, Any] = {}
    text_lists: list[str] = []
    for f in dataclasses.fields(Settings):
        meta = f.metadata
        hint = hints[f.name]
        if meta["text_list"]:
            hint = Annotated[hint, NoDecode]  # the validator below parses the text
            text_lists.append(f.name)
        default: dict[str, Any] = (
            {"default_factory": f.default_factory}
            if f.default_factory is not dataclasses.MISSING else {"default": f.default})
        fields[f.name] = (hint, Field(**default, description=meta["description"],
                                      repr=not meta["secret"], **meta["rules"]))
    validators = {"_split_list": field_validator(*text_lists, mode="before")(_split_list)}
    return create_model("Settings", __base__=_EnvSettings, __validators__=validators,
                        **fields)


def validate(overrides: dict[str, Any]) -> dict[str, Any]:
    """Every setting's value: ``overrides``, else its ``BULKPORT_*`` variable, else default."""
    checked = model()(**overrides)
    return {name: getattr(checked, name) for name in type(checked).model_fields}
