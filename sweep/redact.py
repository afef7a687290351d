"""Keep secrets out of MLflow: passwords in URIs, token-like query values, credential env values.

Everything the project writes to params, tags or artifacts passes through `redact`.
"""
from __future__ import annotations

import os
import re
from typing import Any

MASK = "***"
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<pw>[^@\s]*)@")
_QUERY = re.compile(r"(?i)(?P<key>[?&;](?:password|passwd|pwd|pass|token|access_token|secret|api[_-]?key|key)=)[^&;\s]+")
# ..._PW / ..._PWD too (MYSQL_PWD), but not the shell's PWD / OLDPWD (the working directory)
_ENV_NAME = re.compile(r"(?i)(PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|ACCESS_?KEY|CREDENTIAL|AUTH|PGPASS|_PWD?(_|$))")


def _secret_env_values() -> list[str]:
    """Values of environment variables whose names say they hold credentials (longest first)."""
    values = {v for k, v in os.environ.items() if _ENV_NAME.search(k) and len(v) >= 4}
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _QUERY.sub(lambda m: f"{m['key']}{MASK}", text)
    for value in _secret_env_values():
        text = text.replace(value, MASK)
    return text


def redact_obj(obj: Any) -> Any:
    """Redact every string inside nested dicts/lists (e.g. a resolved config)."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v) for v in obj)
    return obj
