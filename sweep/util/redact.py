"""Keep secrets out of everything the project writes: MLflow params, tags, run names, artifacts, error
texts, and the report's files.

A secret is rarely stored the way it was typed: Hydra writes `postgresql\\://bob\\:pw@h` into a job's
overrides, a shell or a config quotes it, a URL percent-encodes it, JSON, Python and HTML escape it. So
two mechanisms work together:

1. patterns: a URL's password (`scheme://user:PASSWORD@`) and secret-named query values
   (`?password=...`), recognised through backslash escapes and percent-encoding;
2. values: every secret this process knows -- the passwords and secret query values of any URL on its
   command line, in the Hydra job's overrides, in any environment variable or in what was passed to
   `learn`, and the values of credential-named environment variables -- is masked wherever it occurs,
   in any mix of those encodings (one regular expression per secret, character by character).

Everything the project writes to MLflow or a report passes through `redact` / `redact_obj`.
"""

from __future__ import annotations

import functools
import html
import os
import re
import sys
import urllib.parse
from typing import Any, Iterable

MASK = "***"
MIN_VALUE = 4  # a shorter secret is masked where a pattern finds it, not as a bare value (it would eat words)

_SCHEME = r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,40}"  # at the start of a word: linear time
# scheme://user:PASSWORD@ as typed or with Hydra's/a shell's backslash escapes (postgresql\://bob\:pw@h) ...
_USERINFO = re.compile(
    rf"(?P<head>{_SCHEME}\\*:\\*/\\*/(?:[^:/@\s\\]|\\+[^:/@\s])*\\*:)"
    r"(?P<pw>(?:[^@\s\\]|\\+[^@\s]|@(?=[^\s/]*@))*)(?P<at>\\*@)"
)  # p@ss@host: up to the last @
# ... or percent-encoded as a whole (a URL inside another URL's query): postgresql%3A%2F%2Fbob%3Apw%40h
_USERINFO_ENCODED = re.compile(
    rf"(?P<head>{_SCHEME}%3[aA]%2[fF]%2[fF](?:[^%:/@\s]|%(?!3[aA]|40)[0-9A-Fa-f]{{2}})*%3[aA])"
    r"(?P<pw>(?:[^%@\s]|%(?!40)[0-9A-Fa-f]{2})*)(?P<at>%40)"
)
_QUERY = re.compile(
    r"(?i)(?P<key>(?:\\*[?&;]|%3F|%26|%3B)(?:password|passwd|pwd|pass|token|access_token|secret|api[_-]?key|key)"
    r"(?:\\*=|%3D))(?P<pw>(?:[^&;\s\\%'\"]|\\+[^&;\s]|%(?!26|3[bB]))+)"
)
# ..._PW / ..._PWD too (MYSQL_PWD), but not the shell's PWD / OLDPWD (the working directory)
_ENV_NAME = re.compile(r"(?i)(PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|ACCESS_?KEY|CREDENTIAL|AUTH|PGPASS|_PWD?(_|$))")

_learned: set[str] = set()


def _decoded(found: str) -> set[str]:
    """A secret as found, without Hydra's/a shell's backslash escapes, and percent-decoded."""
    unescaped = re.sub(r"\\(.)", r"\1", found)
    return {found, unescaped, urllib.parse.unquote(unescaped), urllib.parse.unquote_plus(unescaped)}


@functools.lru_cache(maxsize=4096)
def _secrets_in(text: str) -> frozenset[str]:
    """Passwords of URLs and secret query values in `text`, in every decoded form."""
    found: set[str] = set()
    for rx in (_USERINFO, _USERINFO_ENCODED, _QUERY):
        for m in rx.finditer(text):
            found |= _decoded(m["pw"])
    return frozenset(v for v in found if len(v) >= MIN_VALUE and v.strip("*"))


def _strings(obj: Any) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            yield from _strings(v)


def learn(obj: Any) -> None:
    """Remember the secrets in `obj` (a string, or nested dicts/lists such as a resolved config): from now
    on they are masked everywhere, however escaped."""
    for s in _strings(obj):
        _learned.update(_secrets_in(s))


def _hydra_overrides() -> list[str]:
    """The running Hydra job's overrides (in a joblib or SLURM worker, the command line is not ours)."""
    if "hydra" not in sys.modules:
        return []
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return []
        o = HydraConfig.get().overrides
        return [*o.task, *o.hydra]
    except Exception:  # noqa: BLE001 - no Hydra job: nothing to add
        return []


def known_secrets() -> list[str]:
    """Every secret value this process knows, longest first."""
    values = set(_learned)
    for k, v in os.environ.items():
        if _ENV_NAME.search(k) and len(v) >= MIN_VALUE:
            values.add(v)
        values |= _secrets_in(v)
    for s in (*sys.argv, *_hydra_overrides()):
        values |= _secrets_in(s)
    return sorted(values, key=lambda v: (-len(v), v))


def _char(c: str) -> str:
    """One character of a secret as it may be stored: typed, backslash-escaped (any depth: Hydra, JSON,
    repr), percent-encoded (any case, or twice), a \\u/\\x escape, an HTML entity, '+' for a space."""
    n = ord(c)
    alts = [
        r"\\*" + re.escape(c),
        "".join(f"%(?:25)?(?i:{b:02x})" for b in c.encode("utf-8")),
        rf"&#0*{n};",
        rf"&#[xX]0*(?i:{n:x});",
        rf"\\+u(?i:{n:04x})",
    ]
    if n < 256:
        alts.append(rf"\\+x(?i:{n:02x})")
    if html.escape(c) != c:
        alts.append(re.escape(html.escape(c)))
    if c == " ":
        alts.append(r"\+")
    if c == "'":
        alts.append(re.escape("'\"'\"'"))  # shlex.quote's way of putting ' inside '...'
    return "(?:" + "|".join(alts) + ")"


@functools.lru_cache(maxsize=1024)
def _value_pattern(secret: str) -> tuple[str, re.Pattern]:
    """(its longest run of letters and digits, the pattern). No encoder escapes letters or digits, so
    where that run is missing the secret is not there in any form: a quick `in` test before the regex."""
    anchor = max(re.findall(r"[A-Za-z0-9]+", secret), key=len, default="")
    return (anchor if len(anchor) >= 3 else ""), re.compile("".join(_char(c) for c in secret))


def redact(text: str) -> str:
    for rx in (_USERINFO, _USERINFO_ENCODED):
        text = rx.sub(lambda m: f"{m['head']}{MASK}{m['at']}", text)
    text = _QUERY.sub(lambda m: f"{m['key']}{MASK}", text)
    for value in known_secrets():
        anchor, pattern = _value_pattern(value)
        if anchor in text:
            text = pattern.sub(MASK, text)
    return text


def redact_obj(obj: Any) -> Any:
    """Redact every string inside nested dicts/lists (e.g. a resolved config), after learning its secrets."""
    learn(obj)
    return _redact_all(obj)


def _redact_all(obj: Any) -> Any:
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: _redact_all(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_redact_all(v) for v in obj)
    return obj


def first_line(e: BaseException | str | None, default: str | None = None, last: bool = False) -> str:
    """The one line of an error a user is shown: its message's first (or `last`) non-blank line, redacted; a
    database driver's own message when SQLAlchemy wraps one (`e.orig`). With no text: `default`, else the
    error's type name."""
    text = "" if e is None else str(getattr(e, "orig", None) or e)
    lines = [x for x in redact(text).strip().splitlines() if x.strip()]
    if lines:
        return lines[-1] if last else lines[0]
    if default is not None:
        return default
    return type(e).__name__ if isinstance(e, BaseException) else ""
