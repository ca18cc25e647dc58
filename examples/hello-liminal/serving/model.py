"""Prediction endpoints served by the python_server runtime."""

from typing import Any


def predict(body: dict[str, Any] | None) -> dict[str, float]:
    x = float((body or {}).get("x", 0))
    return {"y": 2 * x + 1}


def version(body: dict[str, Any] | None) -> dict[str, str]:
    return {"version": "1"}
