"""Loading and validating ``kefu.toml``.

Three stages, because the plugins decide which sections exist:

1. :func:`read_raw` parses the TOML, resolves ``{ env = "NAME" }`` secrets and
   applies ``KEFU_SECTION__KEY=value`` environment overrides;
2. :func:`plugins_settings` validates ``[plugins]`` so the manager can be built;
3. :func:`validate` checks every section against the kernel's models and the
   models the enabled plugins declare through ``kefu_config_schema``.

Every error is a :class:`ConfigError` naming the file, the key and what was
expected.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    ValidationError,
    model_validator,
)

from kefu.core.errors import ConfigError

DEFAULT_SOURCE = "<built-in defaults>"
ENV_PREFIX = "KEFU_"
ENV_SEPARATOR = "__"


class Section(BaseModel):
    """Base for configuration sections: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    data_dir: str = "kefu-data"
    secret: str | None = Field(None, min_length=32)
    reload: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    public_url: str | None = None
    #: ``gc.set_threshold`` at start-up (core/gc_tuning.py, docs/performance.md "GC pauses").
    gc_thresholds: list[NonNegativeInt] = Field(
        default_factory=lambda: [700, 10, 10], min_length=3, max_length=3
    )
    #: Seconds between the checks that freeze new long-lived objects; 0: only at start-up.
    gc_freeze_interval_s: float = Field(1.0, ge=0, le=3600)
    #: Seconds a worker has to drain on SIGTERM before the supervisor kills it.
    drain_timeout: float = Field(30.0, gt=0, le=3600)
    #: Seconds a new connection has to send its first request's headers (slow-header
    #: clients are dropped; 0: no limit).
    header_timeout: float = Field(10.0, ge=0, le=3600)
    #: Tests and demos only: several workers on the in-process bus (each sees only its own).
    allow_unshared_bus: bool = False
    #: HTTPS/WSS (and gRPC TLS) on this port: PEM certificate chain and private key files
    #: (core/tls.py, docs/security.md "TLS"); both or neither.
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Mutual TLS: clients must present a certificate signed by this CA (PEM file).
    tls_client_ca: str | None = None
    tls_min_version: Literal["1.2", "1.3"] = "1.3"
    #: Seconds between checks of the TLS files for a renewed certificate; 0: never.
    tls_reload_interval_s: float = Field(5.0, ge=0, le=86400)
    #: Strict-Transport-Security when serving TLS (or when public_url is https).
    hsts: bool = True
    hsts_max_age: NonNegativeInt = 31536000

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        return self


class PluginsSettings(Section):
    enable: list[str] = []
    disable: list[str] = []
    require: list[str] = []


class StorageSettings(Section):
    backend: str = "sql"


class BusSettings(Section):
    backend: str = "memory"


#: Sections the kernel owns; plugins declare theirs through ``kefu_config_schema``.
KERNEL_SECTIONS: dict[str, type[Section]] = {
    "server": ServerSettings,
    "plugins": PluginsSettings,
    "storage": StorageSettings,
    "bus": BusSettings,
}

#: Settings read once at start-up; a live change is logged as needing a restart.
RESTART_SECTIONS = frozenset({"server", "plugins", "storage", "bus"})


class Config:
    """An immutable, validated configuration. Swapped whole on reload, never mutated."""

    __slots__ = ("_sections", "raw", "source")

    def __init__(self, source: str, raw: dict[str, Any], sections: dict[str, Any]) -> None:
        self.source = source
        self.raw = raw
        self._sections = sections

    def section(self, name: str) -> Any:
        return self._sections[name]

    def sections(self) -> Mapping[str, Any]:
        return dict(self._sections)

    @property
    def server(self) -> ServerSettings:
        return self._sections["server"]

    @property
    def plugins(self) -> PluginsSettings:
        return self._sections["plugins"]

    @property
    def storage(self) -> StorageSettings:
        return self._sections["storage"]

    @property
    def bus(self) -> BusSettings:
        return self._sections["bus"]


def read_raw(path: str | os.PathLike | None, environ: Mapping[str, str] | None = None) -> dict:
    """Parse the file (or start from nothing), resolve secrets, apply env overrides."""
    environ = os.environ if environ is None else environ
    source = str(path) if path else DEFAULT_SOURCE
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(source, "", "file not found (create one with `kefu init`)") from None
        except OSError as exc:
            raise ConfigError(source, "", f"cannot read: {exc.strerror}") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, "", f"invalid TOML: {exc}") from None
    _apply_env_overrides(raw, environ, source)
    return _resolve_secrets(raw, environ, source, "")


def _apply_env_overrides(raw: dict, environ: Mapping[str, str], source: str) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or ENV_SEPARATOR not in name:
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split(ENV_SEPARATOR)]
        if not all(keys):
            raise ConfigError(name, "", "environment override needs KEFU_SECTION__KEY")
        table = raw
        for key in keys[:-1]:
            table = table.setdefault(key, {})
            if not isinstance(table, dict):
                raise ConfigError(name, ".".join(keys), "overrides a value that is not a table")
        table[keys[-1]] = _parse_env_value(value)


def _parse_env_value(value: str) -> Any:
    """``8080`` -> int, ``true`` -> bool, ``["a"]`` -> list; anything else stays a string."""
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _resolve_secrets(node: Any, environ: Mapping[str, str], source: str, key: str) -> Any:
    if isinstance(node, dict):
        if set(node) == {"env"} and isinstance(node["env"], str):
            if node["env"] not in environ:
                raise ConfigError(
                    source, key, f"environment variable {node['env']} is not set (secret)"
                )
            return environ[node["env"]]
        return {
            k: _resolve_secrets(v, environ, source, f"{key}.{k}" if key else k)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_resolve_secrets(v, environ, source, f"{key}[{i}]") for i, v in enumerate(node)]
    return node


def _validate_section(source: str, name: str, model: type[BaseModel], value: Any) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(source, name, f"expected a table [{name}], got {type(value).__name__}")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join([name, *(str(p) for p in err["loc"])])
        if err["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields) or "none"
            raise ConfigError(source, key, f"unknown key (known keys: {known})") from None
        got = err.get("input")
        detail = err["msg"] if isinstance(got, dict) else f"{err['msg']}, got {got!r}"
        raise ConfigError(source, key, detail) from None


def plugins_settings(raw: dict, source: str) -> PluginsSettings:
    return _validate_section(source, "plugins", PluginsSettings, raw.get("plugins", {}))


def validate(raw: dict, source: str, plugin_schemas: Mapping[str, type[BaseModel]]) -> Config:
    """Validate every section; ``plugin_schemas`` maps section names to plugin models."""
    clash = sorted(set(plugin_schemas) & set(KERNEL_SECTIONS))
    if clash:
        raise ConfigError(source, clash[0], "a plugin declares a section the kernel owns")
    models = {**KERNEL_SECTIONS, **plugin_schemas}
    unknown = sorted(set(raw) - set(models))
    if unknown:
        raise ConfigError(
            source,
            unknown[0],
            f"unknown section: no enabled plugin declares it (known: {', '.join(sorted(models))})",
        )
    sections = {
        name: _validate_section(source, name, model, raw.get(name, {}))
        for name, model in models.items()
    }
    return Config(source, raw, sections)


def blame_env_override(exc: ConfigError, environ: Mapping[str, str] | None = None) -> ConfigError:
    """Name the ``KEFU_…`` variable when the offending value came from the environment."""
    environ = os.environ if environ is None else environ
    parts = [p for p in exc.key.replace("[", ".").split(".") if p and not p[0].isdigit()]
    for depth in range(len(parts), 0, -1):
        name = ENV_PREFIX + ENV_SEPARATOR.join(parts[:depth]).upper()
        if name in environ:
            return ConfigError(f"{exc.file} (overridden by {name})", exc.key, exc.message)
    return exc


def changed_sections(old: Config, new: Config) -> list[str]:
    names = set(old.sections()) | set(new.sections())
    return sorted(n for n in names if old.sections().get(n) != new.sections().get(n))
