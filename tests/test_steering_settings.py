"""SteeringSettings: typed, frozen, checked at construction with one-line user errors."""

from __future__ import annotations

import dataclasses

import pytest

from companion.core.errors import UserError
from companion.steering.settings import SteeringSettings


def test_defaults_are_valid_and_languages_become_a_tuple() -> None:
    settings = SteeringSettings(languages=["en", "fr"])
    assert settings.languages == ("en", "fr")
    assert hash(settings) == hash(SteeringSettings(languages=("en", "fr")))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 1  # type: ignore[misc]


@pytest.mark.parametrize("field, value", [("selection", "bottom"), ("pooling", "median"), ("protocol", "target"),
                                          ("positions", "first"), ("dtype", "int8")])
def test_a_bad_choice_names_the_field_the_value_and_the_choices(field: str, value: str) -> None:
    with pytest.raises(UserError, match=f"{field}='{value}'.*use one of") as caught:
        SteeringSettings(**{field: value})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("changes", [{"n_eval": 0}, {"threads": 0}, {"languages": ["en"]}, {"languages": ["en", "en"]}])
def test_bad_counts_and_languages_are_user_errors(changes: dict) -> None:
    with pytest.raises(UserError):
        SteeringSettings(**changes)


def test_auto_dtype_is_bfloat16_on_gpus_or_a_native_cpu(monkeypatch) -> None:
    from companion.core import precision

    monkeypatch.setattr(precision, "native_bfloat16", lambda: True)
    assert SteeringSettings(dtype="auto").dtype == "bfloat16"
    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)
    assert SteeringSettings(dtype="auto") == SteeringSettings(dtype="float32")
    assert SteeringSettings(dtype="auto", device_map="auto").dtype == "bfloat16"  # the model is placed on GPUs
    assert SteeringSettings(dtype="auto", device_map="").dtype == "float32"
