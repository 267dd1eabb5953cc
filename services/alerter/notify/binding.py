"""A notifier's secrets are bound to their destination and to the role that set them.

The attack this stops: an operator PUTs an admin's Telegram notifier with only `base_url`
changed (or an email one with `smtp_host`/`smtp_port`/`smtp_tls=none`), leaves the token out
("an empty secret keeps the stored one"), and calls test: the token or SMTP password arrives at
the operator's own listener. So:

- a PUT that leaves a secret empty keeps the stored one only when the destination (kind and
  the fields below) is unchanged; a PUT that moves the destination must give the secret again,
  else 409 with the fields that moved;
- a caller whose role is below the one that set the stored secrets may change only the other
  fields (enabled, route, severity, chat id, sender and recipients): moving the destination or
  replacing the secrets is 403 (an operator cannot redirect nor take over an admin's
  notifier; an operator's own notifier stays theirs to edit);
- secrets are never read back (NotifierView), and a URL shown masked and sent back unchanged
  keeps the stored URL (so a UI round trip does not count as a move).

Deleting a notifier stays an operator's action: it loses the secrets, it does not reveal them.
"""

from __future__ import annotations

import msgspec

from libs.schemas.alerting import Notifier, RoleName
from libs.schemas.secrets import mask_url

# Where each kind's secret is sent: changing one of these changes who receives the secret.
# smtp_user: the password is the credential of that login; smtp_ca_file: which server counts
# as the real one; smtp_tls: whether the password crosses the network in clear.
DESTINATION: dict[str, tuple[str, ...]] = {
    "telegram": ("base_url",),
    "email": ("smtp_host", "smtp_port", "smtp_tls", "smtp_ca_file", "smtp_user"),
    "webhook": ("url",),
}
SECRET_OF = {"telegram": "bot_token", "email": "smtp_password", "webhook": "webhook_secret"}
SECRETS = ("bot_token", "smtp_password", "webhook_secret")
LEVEL = {"viewer": 0, "operator": 1, "admin": 2}


class BindingError(Exception):
    """A PUT the binding refuses: `code` is the HTTP status (403 or 409) the caller gets."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def holds_secrets(n: Notifier) -> bool:
    return any(getattr(n, s) for s in SECRETS)


def _unmasked(new: Notifier, old: Notifier) -> Notifier:
    """URLs sent back as a read showed them (masked) mean the stored ones."""
    changes = {}
    for f in ("base_url", "url"):
        shown = mask_url(getattr(old, f))
        if getattr(new, f) == shown and shown != getattr(old, f):
            changes[f] = getattr(old, f)
    return msgspec.structs.replace(new, **changes) if changes else new


def moved(new: Notifier, old: Notifier) -> list[str]:
    """The destination fields `new` changes from `old` (the kind first, when it changes)."""
    if new.kind != old.kind:
        return ["kind"]
    return [f for f in DESTINATION[new.kind] if getattr(new, f) != getattr(old, f)]


def bind(new: Notifier, old: Notifier | None, role: RoleName) -> Notifier:
    """What to store for a PUT of `new` by `role` over `old` (the notifier in effect under that
    name, stored or from the environment); BindingError when it would move or take a secret."""
    if old is not None:
        new = _unmasked(new, old)
    given = [s for s in SECRETS if getattr(new, s)]
    if old is None or not holds_secrets(old):
        return msgspec.structs.replace(new, secrets_role=role)
    changed = moved(new, old)
    owner = old.secrets_role
    if LEVEL[role] < LEVEL[owner]:
        if changed:
            raise BindingError(
                403,
                f"notifier {old.name!r} holds secrets an {owner} set: only an {owner} may change where "
                f"they go ({', '.join(changed)}); an {role} may change its other fields",
            )
        if given:
            raise BindingError(
                403, f"notifier {old.name!r} holds secrets an {owner} set: only an {owner} may replace them"
            )
    if changed:
        need = SECRET_OF[new.kind]
        if not getattr(new, need):
            raise BindingError(
                409,
                f"changing {', '.join(changed)} of notifier {old.name!r} would send its stored {need} "
                f"somewhere else: give {need} again in the same request (it is never read back)",
            )
        return msgspec.structs.replace(new, secrets_role=role)  # nothing carried over
    kept = {s: getattr(new, s) or getattr(old, s) for s in SECRETS}
    return msgspec.structs.replace(new, **kept, secrets_role=role if given else owner)
