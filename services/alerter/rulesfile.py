"""A file of rules, checks, silences and notifiers loaded at start (infrastructure as code).

TOML (`[[rules]]`, `[[checks]]`, `[[silences]]`, `[[notifiers]]`) or JSON with the same keys.
A secret may be given as `env:NAME` so the file itself can be committed.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import msgspec

from libs.schemas.alerting import Check, Notifier, Rule, Silence


class RulesFileError(ValueError):
    pass


class RulesFile(msgspec.Struct, kw_only=True, frozen=True):
    rules: list[Rule] = []
    checks: list[Check] = []
    silences: list[Silence] = []
    notifiers: list[Notifier] = []


def _secret(v: str, where: str) -> str:
    if v.startswith("env:"):
        name = v[4:]
        if name not in os.environ:
            raise RulesFileError(f"{where}: environment variable {name} is not set")
        return os.environ[name]
    return v


def load(path: str | Path) -> RulesFile:
    p = Path(path)
    try:
        raw = p.read_bytes()
        data = tomllib.loads(raw.decode()) if p.suffix == ".toml" else json.loads(raw)
        rf = msgspec.convert(data, RulesFile)
    except (OSError, ValueError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise RulesFileError(f"{p}: {exc}") from None
    notifiers = [
        msgspec.structs.replace(
            n,
            bot_token=_secret(n.bot_token, f"notifier {n.name}"),
            smtp_password=_secret(n.smtp_password, f"notifier {n.name}"),
            webhook_secret=_secret(n.webhook_secret, f"notifier {n.name}"),
        )
        for n in rf.notifiers
    ]
    return msgspec.structs.replace(rf, notifiers=notifiers)
