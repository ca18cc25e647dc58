"""The package root exports exactly this; anything else is internal and may change."""

import controller


def test_exported_members() -> None:
    assert sorted(controller.__all__) == [
        "ConfigError",
        "InputError",
        "LiminalError",
        "Problem",
        "Spec",
        "TargetError",
        "TransientError",
    ]
    for name in controller.__all__:
        assert hasattr(controller, name)
