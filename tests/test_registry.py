from pathlib import Path

import pytest

from adaptbench import registry
from adaptbench.registry import Paper, get_method, register


def test_registry_names_equal_file_stems(repo):
    stems = {p.stem for p in (repo / "methods").glob("*/*.py") if not p.stem.startswith("_")}
    assert set(registry.available()) == stems


def test_every_method_has_paper_metadata_and_a_config():
    for name in registry.available():
        spec = get_method(name)
        assert spec.paper.title and spec.paper.year
        spec.make_config({})  # paper defaults must be valid


def test_unknown_method_suggests_the_close_name():
    with pytest.raises(KeyError, match=r"Unknown method 'lorra'\. Did you mean: lora\b"):
        get_method("lorra")


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        @register(family="adapter", paper=Paper("x", None, 2020), config=object, name="lora")
        class Again:
            pass


def test_unknown_hyperparameter_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['rank'\]; valid: \["):
        get_method("lora").make_config({"rank": 4})
