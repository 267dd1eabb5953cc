"""Masking what looks like a secret in command lines, environments, URLs and free text.

Pure functions (no I/O) so every side masks the same way: the gateway for callers below admin,
the audit publisher before a record is stored (audit is kept 400 days and cannot be edited), the
collector before a process's command line leaves the host. Masking errs on the side of hiding:
a false positive costs a viewer one unreadable value, a false negative leaks a credential.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

MASK = "***"

# A name that holds a secret when it ends with one of these. The long words may follow any
# prefix (PGPASSWORD, GITHUB_TOKEN); the short ones only a separator or nothing (db-pass, but
# not bypass; auth, but not oauth or author).
_LONG = r"password|passwd|passphrase|secret|token|apikey|privatekey|credentials?"
_SHORT = (
    r"pass|pwd|pw|auth|authorization|creds|dsn|cookie|session[_-]?id|"
    r"(?:api|access|secret|private|signing|encryption|master|client)[_-]?key"
)
_NAME = rf"(?:[\w.-]*(?:{_LONG})|(?:[\w.-]*[_.-])?(?:{_SHORT}))"
_NAME_RE = re.compile(rf"^-{{0,2}}{_NAME}$", re.IGNORECASE)
# `name=value` inside one argv token (`--password=x`, `PGPASSWORD=x`, `token=x`).
_ARG_KV = re.compile(rf"^(-{{0,2}}{_NAME})=(.+)$", re.IGNORECASE | re.DOTALL)
# A name ending in `key` with a long, high-entropy value (`--key=Zx9...`, `SSH_KEY=...`).
_ARG_KEY = re.compile(r"^(-{0,2}[\w.-]*key)=(.+)$", re.IGNORECASE | re.DOTALL)

# In free text: `name=value`, `name: value`, `"name": "value"`, and `--name value`.
_TEXT_KV = re.compile(
    rf"(?<![\w.-])(?P<k>-{{0,2}}{_NAME})(?P<sep>[\"']?\s*[=:]\s*[\"']?)(?!(?:true|false|null)\b)(?P<v>[^\s\"'&]+)",
    re.IGNORECASE,
)
_TEXT_FLAG = re.compile(rf"(?<![\w.-])(?P<k>--?{_NAME})(?P<sep>\s+)(?P<v>[^\s\"'&-][^\s\"'&]*)", re.IGNORECASE)
# scheme://user:password@host; a password cannot hold an unencoded `/` or `@` (RFC 3986).
_URL_USERINFO = re.compile(r"(?P<k>\b[a-z][a-z0-9+.-]*://[^\s:/?#@]*:)(?P<v>[^\s@/]+)(?P<sep>@)", re.IGNORECASE)
_AUTH_SCHEME = re.compile(r"(?P<k>\b(?:bearer|basic)\s+)(?P<v>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)
# Formats a credential is recognised by on its own, wherever it stands.
_KNOWN = re.compile(
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}\b"  # AWS access key id
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|\bgithub_pat_[A-Za-z0-9_]{30,}"
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT
    r"|\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|\bsk-[A-Za-z0-9_-]{20,}"  # OpenAI-style
    r"|\bAIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|\b\d{6,12}:[A-Za-z0-9_-]{30,}"  # Telegram bot token
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"
)
# Not `/`: a path or URL is no key, and a key after a name is caught by the name.
_LONG_RUN = re.compile(r"(?<![\w+=-])[A-Za-z0-9+=_-]{32,}")
# find(1) and compilers take single-dash words starting with p; they are not `-p<password>`.
_P_WORDS = frozenset({"path", "perm", "print", "print0", "printf", "prune", "pthread", "pedantic", "pipe", "pie"})


def entropy(s: str) -> float:
    """Shannon entropy of `s` in bits per character."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _random_looking(s: str, min_len: int, bits: float = 0.0) -> bool:
    """Long, mixed upper/lower/digits and near-random: a key, not a word, a path or a hex digest.
    `bits`: the least entropy per character; by default about what a random string of its
    length has at least (a short one cannot reach 4 bits: 16 characters hold at most 4)."""
    return (
        len(s) >= min_len
        and not s.startswith("/")
        and any(c.isupper() for c in s)
        and any(c.islower() for c in s)
        and any(c.isdigit() for c in s)
        and entropy(s) >= (bits or min(4.0, 0.7 * math.log2(len(s))))
    )


def is_secret_name(name: str) -> bool:
    """`name` (an env variable, a flag, a JSON key) names a secret."""
    return bool(_NAME_RE.match(name))


def mask_text(text: str) -> str:
    """`text` with every secret-looking value replaced by MASK (idempotent)."""
    if not text:
        return text
    keep = r"\g<k>\g<sep>" + MASK
    text = _URL_USERINFO.sub(r"\g<k>" + MASK + r"\g<sep>", text)
    text = _AUTH_SCHEME.sub(r"\g<k>" + MASK, text)
    text = _TEXT_KV.sub(lambda m: m.group(0) if m.group("v") == MASK else m.expand(keep), text)
    text = _TEXT_FLAG.sub(lambda m: m.group(0) if m.group("v") == MASK else m.expand(keep), text)
    text = _KNOWN.sub(MASK, text)
    # Standing alone, only a string well past what identifiers reach (random 32 characters of
    # base64 have about 4.6 bits each, `MyApplicationServerConfiguration1` 4.1).
    return _LONG_RUN.sub(lambda m: MASK if _random_looking(m.group(0), 32, 4.3) else m.group(0), text)


def _mask_token(tok: str) -> str:
    m = _ARG_KV.match(tok)
    if m:
        return f"{m.group(1)}={MASK}"
    m = _ARG_KEY.match(tok)
    if m and _random_looking(m.group(2), 16):
        return f"{m.group(1)}={MASK}"
    if tok.startswith("-p") and not tok.startswith("--") and len(tok) > 2:
        rest = tok[2:]
        if not rest.isdigit() and tok[1:] not in _P_WORDS and rest != MASK:
            return "-p" + MASK  # mysql -pSECRET
    return mask_text(tok)


def mask_argv(argv: list[str]) -> list[str]:
    """A command line with secret values masked: `--password=x`, `--password x`, `-px`,
    `sshpass -p x` (but `ssh -p 22`), `curl -u user:x`, URLs with a password, known token
    formats. A flag's value is the next token, so the tokens are read in order."""
    out: list[str] = []
    prev = ""
    for tok in argv:
        if prev == "-p" and not tok.startswith("-"):
            out.append(tok if tok.isdigit() else MASK)
        elif prev in ("-u", "--user") and ":" in tok:
            out.append(tok.split(":", 1)[0] + ":" + MASK)
        elif prev.startswith("-") and "=" not in prev and _NAME_RE.match(prev) and not tok.startswith("-"):
            out.append(MASK)
        else:
            out.append(_mask_token(tok))
        prev = tok
    return out


def mask_env(env: dict[str, str]) -> dict[str, str]:
    """Every value masked, names kept: an environment holds credentials under any name
    (DATABASE_URL=postgres://app:pw@...), so below admin no value is shown."""
    return {k: (MASK if v else v) for k, v in env.items()}


def mask_url(url: str) -> str:
    """A URL with its userinfo password, secret-named query values and random-looking path
    segments masked (a Slack-style webhook URL is itself the credential)."""
    head, sep, rest = mask_text(url).partition("://")
    if not sep:
        return head
    parts = rest.split("/")
    return head + sep + "/".join([parts[0], *(MASK if _random_looking(p, 16) else p for p in parts[1:])])


# Keys whose list of strings is a command line (read as one, so `--password x` is seen).
ARGV_KEYS = frozenset({"argv", "args", "cmdline", "command", "cmd"})


def mask_deep(obj: Any, *, env_values: bool = True, _key: str = "") -> Any:
    """A copy of JSON-like data (dicts, lists, strings) with secrets masked: values under
    secret-looking keys, every value of an `env` mapping (when `env_values`), command lines
    (lists under ARGV_KEYS), other strings as text."""
    if isinstance(obj, dict):
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            key = k if isinstance(k, str) else ""
            if key == "env" and isinstance(v, dict) and env_values:
                out[k] = mask_env({str(ek): ev if isinstance(ev, str) else str(ev) for ek, ev in v.items()})
            elif key and is_secret_name(key) and isinstance(v, str) and v:
                out[k] = MASK
            else:
                out[k] = mask_deep(v, env_values=env_values, _key=key)
        return out
    if isinstance(obj, list):
        if _key in ARGV_KEYS and all(isinstance(x, str) for x in obj):
            return mask_argv(obj)
        return [mask_deep(x, env_values=env_values) for x in obj]
    if isinstance(obj, str):
        return mask_text(obj)
    return obj
