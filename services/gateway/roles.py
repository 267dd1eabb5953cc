"""Roles are ordered: each one may do what the ones below it may."""

from __future__ import annotations

from typing import Literal

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[str, ...] = ("viewer", "operator", "admin")
LEVEL = {r: i for i, r in enumerate(ROLES)}


def allows(have: str, need: str) -> bool:
    return LEVEL.get(have, -1) >= LEVEL[need]
