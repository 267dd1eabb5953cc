"""Where the CLI finds the gateway and its token.

The CA of an https gateway with its own certificate authority: FLEETWATCH_CA_FILE, or the one
given to `fleetwatch login --ca-file`.

Order: `--url` / FLEETWATCH_URL / the saved login / the dev stack of the current directory
(`make run` writes its gateway port to `.fleetwatch/stack.json`) / the local default; FLEETWATCH_TOKEN (a session
or an API token, for automation) / the saved login. The saved login is one 0600 file in
`$XDG_CONFIG_HOME/fleetwatch` (default `~/.config/fleetwatch`), written atomically; its token is
only ever sent to the URL it was issued by.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import msgspec

DEFAULT_URL = "http://127.0.0.1:8080"
CREDENTIALS = "credentials.json"


class Credentials(msgspec.Struct, kw_only=True, frozen=True):
    url: str
    token: str
    username: str = ""
    role: str = ""
    expires_at: float | None = None
    ca_file: str = ""  # the CA that signed an https gateway's certificate (`fleetwatch certs`)


_codec_dec = msgspec.json.Decoder(Credentials)
_codec_enc = msgspec.json.Encoder()


class ConfigError(Exception):
    """Not logged in, or the saved login is unusable: a sentence for the user."""


def config_dir(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "fleetwatch"


def credentials_path() -> Path:
    return config_dir() / CREDENTIALS


def load() -> Credentials | None:
    p = credentials_path()
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror}") from None
    try:
        return _codec_dec.decode(data)
    except msgspec.DecodeError:
        raise ConfigError(f"{p} is not a fleetwatch login file; run `fleetwatch login` again") from None


def save(creds: Credentials) -> Path:
    """Write the login file 0600 (its directory 0700) in one rename: never readable by others,
    never half written."""
    d = config_dir()
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    p = d / CREDENTIALS
    tmp = d / f".{CREDENTIALS}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a leftover file
        os.write(fd, _codec_enc.encode(creds))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)
    return p


def remove() -> bool:
    try:
        credentials_path().unlink()
        return True
    except FileNotFoundError:
        return False


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    return url


def resolve_url(flag: str | None) -> str:
    if flag:
        return normalize_url(flag)
    if os.environ.get("FLEETWATCH_URL"):
        return normalize_url(os.environ["FLEETWATCH_URL"])
    creds = load()
    if creds:
        return creds.url
    return dev_stack_url(Path.cwd()) or DEFAULT_URL


def dev_stack_url(directory: Path) -> str | None:
    try:
        port = int(json.loads((directory / ".fleetwatch" / "stack.json").read_text())["gateway_port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return f"http://127.0.0.1:{port}"


def resolve_ca(url: str) -> str:
    """FLEETWATCH_CA_FILE, else the CA saved with the login to this URL; empty: the system's CAs."""
    if os.environ.get("FLEETWATCH_CA_FILE"):
        return os.environ["FLEETWATCH_CA_FILE"]
    creds = load()
    return creds.ca_file if creds and creds.url == url else ""


def resolve_token(url: str) -> str:
    token = os.environ.get("FLEETWATCH_TOKEN", "").strip()
    if token:
        return token
    creds = load()
    if creds is None:
        raise ConfigError("not logged in: run `fleetwatch login` (or set FLEETWATCH_TOKEN to an API token)")
    if creds.url != url:
        raise ConfigError(f"the saved login is for {creds.url}, not {url}: run `fleetwatch login --url {url}`")
    if creds.expires_at is not None and creds.expires_at < time.time():
        raise ConfigError(f"the session of {creds.username or 'the saved login'} has expired: run `fleetwatch login`")
    return creds.token
