"""The comparison for webhook ingest: a minimal FastAPI endpoint that only checks GitHub's HMAC
(no parsing, no ledger), served by uvicorn as `liminal serve` is. Run by benchmarks/scale.py:

    uvicorn benchmarks.hmac_only:app --port PORT
"""

from __future__ import annotations

import hashlib
import hmac
import os

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()
_SECRET = os.environ.get("BENCH_SECRET", "").encode()


@app.post("/webhooks/github")
async def github(request: Request) -> JSONResponse:
    """202 when the signature matches the body, 401 otherwise."""
    body = await request.body()
    expected = "sha256=" + hmac.new(_SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("X-Hub-Signature-256", "")):
        return JSONResponse({"status": "refused"}, status_code=401)
    return JSONResponse({"status": "queued"}, status_code=202)
