"""methods/manifest.json is the registry's torch-free summary: it must match the registry exactly."""

import pytest

from adaptbench import manifest, registry


def test_manifest_is_current():
    assert registry.generate_manifest() == manifest.load(), "stale: run `adaptbench manifest --write`"


def test_manifest_flags_agree_with_the_classes():
    from adaptbench import registry

    for name, entry in manifest.load().items():
        spec = registry.get_method(name)
        assert entry["family"] == spec.family and entry["mergeable"] == spec.mergeable
        assert entry["data_driven"] == bool(getattr(spec.cls, "DATA_DRIVEN", False))


def test_params_are_checked_without_torch():
    with pytest.raises(ValueError, match=r"method 'lora' has no hyperparameter 'rank'"):
        manifest.check_params("lora", {"rank": 4}, "grid")
    with pytest.raises(ValueError, match=r"lora': r must be a int like its default 8, got True"):
        manifest.check_params("lora", {"r": True}, "grid")
    manifest.check_params("lora", {"r": 16, "alpha": 32}, "grid")  # int where the default is float: fine
    assert manifest.resolve_params("lora", {"r": 16})["r"] == 16
