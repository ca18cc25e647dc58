"""Configuration read from the environment: the only module that looks at `os.environ`."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

__all__ = ["placeholder_environ"]

_SECRET_LIKE = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|(^|_)KEY($|_)", re.IGNORECASE)


def placeholder_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables that `{{name}}` placeholders may read at load time.

    Liminal fills placeholders from the environment after `variables`. A controller holds
    credentials in its environment, so anything named like a secret, and the controller's own
    `LIMINAL_*` settings, are withheld: a liminal.yml must never be able to copy them into a DAG.
    """
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not k.startswith("LIMINAL_") and not _SECRET_LIKE.search(k)}
