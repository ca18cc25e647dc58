"""Prediction endpoints served by the python_server runtime.

As in Liminal, each function gets the raw request body (JSON bytes); a dict it returns is sent as JSON.
"""

import json
from typing import Any


def predict(body: bytes) -> dict[str, float]:
    request: dict[str, Any] = json.loads(body or b"{}")
    return {"y": 2 * float(request.get("x", 0)) + 1}


def version(body: bytes) -> dict[str, str]:
    return {"version": "1"}
