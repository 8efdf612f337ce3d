"""`devices.toml` in the user config dir: named devices (url, token file or env var, tags)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from edgec.errors import BadInputError

__all__ = ["Device", "inventory_path", "load_inventory", "read_token", "resolve_device"]


@dataclass(frozen=True)
class Device:
    """An agent to bench on: a name for reports and file suffixes, its URL and bearer token, and the CA
    file that vouches for its TLS certificate when that is not one the system trusts (a self-signed one)."""

    name: str
    url: str
    token: str | None = None
    tags: tuple[str, ...] = field(default=())
    ca_file: str | None = None


def inventory_path() -> Path:
    return Path(platformdirs.user_config_dir("edgec")) / "devices.toml"


def read_token(path: str | Path) -> str:
    path = Path(path).expanduser()
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise BadInputError(f"cannot read token file {path}: {exc.strerror or exc}") from exc
    if not token:
        raise BadInputError(f"token file {path} is empty")
    return token


def _check_url(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInputError(f"{where}: {url!r} is not an http:// or https:// URL")
    return url.rstrip("/")


def load_inventory() -> dict[str, Device]:
    """The devices in `devices.toml` (none when the file does not exist)."""
    path = inventory_path()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInputError(f"cannot read {path}: {exc}") from exc
    devices = {}
    for name, entry in (data.get("devices") or {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            raise BadInputError(f"{path}: [devices.{name}] needs a url")
        token = None
        if entry.get("token_file"):
            token = read_token(entry["token_file"])
        elif entry.get("token_env"):
            token = os.environ.get(entry["token_env"]) or None
            if token is None:
                raise BadInputError(f"{path}: [devices.{name}] reads its token from ${entry['token_env']}, which is not set")
        devices[name] = Device(name, _check_url(entry["url"], f"{path} [devices.{name}]"), token,
                               tuple(entry.get("tags", ())), entry.get("ca_file"))
    return devices


def resolve_device(name_or_url: str, token_file: str | None = None, ca_file: str | None = None) -> Device:
    """A `--device` value: an http(s) URL (token from `token_file`) or a name in `devices.toml`;
    `token_file` and `ca_file`, when given, override what `devices.toml` says."""
    if "://" in name_or_url:
        url = _check_url(name_or_url, "--device")
        parts = urlsplit(url)
        return Device(f"{parts.hostname}-{parts.port or parts.scheme}", url, read_token(token_file) if token_file else None,
                      ca_file=ca_file)
    devices = load_inventory()
    if name_or_url not in devices:
        raise BadInputError(f"--device {name_or_url}: no such device in {inventory_path()}"
                            f" (known: {', '.join(sorted(devices)) or 'none'})")
    device = devices[name_or_url]
    token = read_token(token_file) if token_file else device.token
    return Device(device.name, device.url, token, device.tags, ca_file or device.ca_file)
