"""Settings, read once from ``BULKPORT_*`` environment variables.

Every setting is declared once, here, as a field of the frozen dataclass
:class:`Settings`: its type, default, rules (``ge``/``le``/``gt``) and
description. The descriptions are the source of the README's configuration
table.

The rules are checked by pydantic-settings (:mod:`bulkport.settings_env`),
loaded only when settings are read from the environment or built from
keyword arguments: ``serve``/``worker``, the API and tests. A worker process
receives the values its parent already validated (:data:`HANDED_ENV`, set by
:mod:`bulkport.jobs.processes`) and builds its settings without pydantic,
~10 MB less per process (bench/README.md, "Process memory").
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")

#: Environment variable that hands a worker process its parent's validated settings (JSON).
HANDED_ENV = "BULKPORT_WORKER_SETTINGS"


def setting(default: T, description: str, *, secret: bool = False, text_list: bool = False,
            **rules: float) -> T:
    """A settings field: its default, its description and the rules its value must meet.

    ``secret``: left out of ``repr``. ``text_list``: a list that may also be given
    as comma-separated text. ``rules``: pydantic's numeric constraints (``ge``, ...).
    """
    meta = {"description": description, "secret": secret, "text_list": text_list,
            "rules": rules}
    if isinstance(default, list):
        items = list(default)
        return field(default_factory=lambda: list(items),  # type: ignore[return-value]
                     repr=not secret, metadata=meta)
    return field(default=default, repr=not secret, metadata=meta)


@dataclass(frozen=True, init=False)
class Settings:
    """The settings of this process; ``Settings(**overrides)`` reads the environment too."""

    database_url: str | None = setting(
        None, "PostgreSQL URL; unset = embedded server in DATA_DIR/pg"
    )
    data_dir: Path = setting(Path("./data"), "Uploads, export files, embedded DB")
    host: str = setting("127.0.0.1", "Address `serve` listens on")
    port: int = setting(8000, "Port `serve` listens on")
    workers: int = setting(4, "Worker processes started by `serve`", ge=0)
    batch_size: int = setting(10_000, "Records per committed batch", ge=1, le=100_000)
    pool_min_size: int = setting(1, "API connection pool minimum", ge=0)
    pool_max_size: int = setting(10, "API connection pool maximum", ge=1)
    api_processes: int = setting(
        1, "API processes `serve` runs on its port (each with its own pool)", ge=1)
    status_threads: int = setting(
        4, "Threads answering `GET /v1/imports/{id}` at once, per API process", ge=1)
    split_min_bytes: int = setting(
        64 * 1024**2, "Stored CSV/NDJSON insert imports this large are split into chunks "
        "that any worker claims; 0 = never split", ge=0)
    chunk_bytes: int = setting(16 * 1024**2, "Size of one chunk of a split import", ge=1)
    max_chunks_in_flight: int = setting(
        8, "Chunks of one split import processed at once, over all workers", ge=1)
    lease_seconds: float = setting(30.0, "Job lease; renewed by live workers", gt=0)
    poll_interval_seconds: float = setting(0.5, "Idle worker poll interval", gt=0)
    max_upload_bytes: int = setting(
        2 * 1024**3, "Largest accepted upload or remote file", ge=1
    )
    max_line_bytes: int = setting(
        1024 * 1024, "Longest accepted NDJSON line / CSV field", ge=1024
    )
    max_decompressed_bytes: int = setting(
        20 * 1024**3, "Largest size a gzip file may inflate to; past it the import fails", ge=1
    )
    allowed_roles: list[str] = setting(
        ["admin", "author", "reader"], "Accepted user roles (JSON list)"
    )
    fetch_timeout_seconds: float = setting(
        60.0, "file_url connect timeout and longest wait for more data", gt=0
    )
    allow_private_urls: bool = setting(
        False, "Allow file_url to reach loopback/private addresses"
    )
    export_ttl_seconds: int = setting(
        24 * 3600, "How long an export file is kept and downloadable", ge=60
    )
    upload_retention_seconds: int = setting(
        3600, "How long the file of an ended import is kept; 0 = deleted at once", ge=0
    )
    export_streams: int = setting(
        8, "Streaming exports served at once (each holds one connection)", ge=1
    )
    export_lanes: int = setting(
        2, "Connections one streaming export of a large table reads with in parallel",
        ge=1, le=8,
    )
    # --- file storage (docs/operations.md, "Storage"): S3-compatible when a bucket is set ---
    s3_bucket: str | None = setting(
        None, "Bucket for uploads, file_url downloads and export files; unset = DATA_DIR"
    )
    s3_prefix: str = setting("exports/", "Key prefix of export files in the bucket")
    s3_upload_prefix: str = setting(
        "uploads/", "Key prefix of uploads and file_url downloads in the bucket"
    )
    s3_part_bytes: int = setting(
        8 * 1024**2, "Part size of the multipart uploads to the bucket (memory per upload "
        "in flight; S3 needs at least 5 MiB)", ge=5 * 1024**2, le=5 * 1024**3,
    )
    s3_endpoint_url: str | None = setting(
        None, "S3-compatible endpoint (MinIO, ...); unset = AWS"
    )
    s3_region: str | None = setting(None, "Bucket region")
    s3_access_key_id: str | None = setting(
        None, "Access key; unset = boto3's default credential chain", secret=True
    )
    s3_secret_access_key: str | None = setting(None, "Secret key", secret=True)
    s3_url_ttl_seconds: int = setting(
        3600, "Lifetime of a presigned download URL (capped by expiry)", ge=1
    )
    log_level: str = setting("INFO", "Logging level")
    log_format: Literal["auto", "json", "console"] = setting(
        "auto", "`json` lines, readable `console` lines, or `auto` (console on a TTY)"
    )
    # --- security and operations (docs/operations.md) ---
    api_keys: list[str] = setting(
        [], "Accepted API keys, comma-separated or a JSON list; empty = no auth",
        secret=True, text_list=True,
    )
    metrics_require_key: bool = setting(False, "`/metrics` also needs an API key")
    health_require_key: bool = setting(False, "`/health` also needs an API key")
    rate_limit_per_minute: int = setting(
        6000, "Sustained /v1 requests per minute per API key (or client "
        "address without keys), shared by all instances on the database; 0 = no limit", ge=0
    )
    rate_limit_burst: int | None = setting(
        None, "Requests allowed at once above the sustained rate; "
        "unset = a tenth of RATE_LIMIT_PER_MINUTE", ge=1
    )
    min_free_disk_bytes: int = setting(
        512 * 1024**2, "`/health` fails below this much free space in DATA_DIR", ge=0
    )
    fetch_allow_list: list[str] = setting(
        [], "Hosts or networks (CIDR) file_url may reach even when private, "
        "comma-separated or a JSON list", text_list=True,
    )
    fetch_max_seconds: float = setting(
        3600.0, "Total time limit of one file_url download", gt=0
    )
    worker_metrics_port: int | None = setting(
        None, "`bulkport worker` serves its Prometheus metrics on this port"
    )

    def __init__(self, **overrides: Any) -> None:
        """Read ``BULKPORT_*`` variables, ``overrides`` first, and check every rule.

        An invalid value raises pydantic's ``ValidationError`` naming the setting.
        """
        from bulkport.settings_env import validate  # pydantic: only where settings are read

        self._assign(validate(overrides))

    def _assign(self, values: Mapping[str, Any]) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, values[f.name])  # frozen: set once, here

    @classmethod
    def from_validated(cls, values: Mapping[str, Any]) -> Settings:
        """Settings from values already checked (by a parent process): no pydantic."""
        settings = cls.__new__(cls)
        hints = field_types()
        # JSON carries paths as text: a setting declared as a Path gets one back.
        settings._assign({name: Path(v) if v is not None and _is_path(hints[name]) else v
                          for name, v in values.items()})
        return settings

    def to_json(self) -> str:
        """Every value, as :meth:`from_validated` takes them back (paths as text)."""
        return json.dumps({name: str(v) if isinstance(v, Path) else v
                           for name, v in self._values().items()})

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Settings:
        """A copy with ``update`` applied and checked (the name pydantic models use)."""
        return Settings(**{**self._values(), **(update or {})})

    def _values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def upload_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def export_dir(self) -> Path:
        return self.data_dir / "exports"


@lru_cache(maxsize=1)
def field_types() -> dict[str, Any]:
    """The declared type of every setting (annotations are text under ``__future__``)."""
    return typing.get_type_hints(Settings)


def _is_path(hint: Any) -> bool:
    return hint is Path or Path in typing.get_args(hint)


def default(name: str) -> Any:
    """The default value of setting ``name``."""
    f = Settings.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """This process's settings: handed over by the parent process, else read from the env."""
    handed = os.environ.get(HANDED_ENV)
    return Settings.from_validated(json.loads(handed)) if handed else Settings()
