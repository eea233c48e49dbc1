"""Settings, read once from ``BULKPORT_*`` environment variables.

Every setting is documented in the README's configuration table; the field
descriptions here are the source of that table.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BULKPORT_", extra="ignore")

    database_url: str | None = Field(
        None, description="PostgreSQL URL; unset = embedded server in DATA_DIR/pg"
    )
    data_dir: Path = Field(Path("./data"), description="Uploads, export files, embedded DB")
    host: str = Field("127.0.0.1", description="Address `serve` listens on")
    port: int = Field(8000, description="Port `serve` listens on")
    workers: int = Field(4, ge=0, description="Worker processes started by `serve`")
    batch_size: int = Field(10_000, ge=1, le=100_000, description="Records per committed batch")
    pool_min_size: int = Field(1, ge=0, description="API connection pool minimum")
    pool_max_size: int = Field(10, ge=1, description="API connection pool maximum")
    lease_seconds: float = Field(30.0, gt=0, description="Job lease; renewed by live workers")
    poll_interval_seconds: float = Field(0.5, gt=0, description="Idle worker poll interval")
    max_upload_bytes: int = Field(
        2 * 1024**3, ge=1, description="Largest accepted upload or remote file"
    )
    max_line_bytes: int = Field(
        1024 * 1024, ge=1024, description="Longest accepted NDJSON line / CSV field"
    )
    max_decompressed_bytes: int = Field(
        20 * 1024**3, ge=1,
        description="Largest size a gzip file may inflate to; past it the import fails",
    )
    allowed_roles: list[str] = Field(
        ["admin", "author", "reader"], description="Accepted user roles (JSON list)"
    )
    fetch_timeout_seconds: float = Field(
        60.0, gt=0, description="file_url connect timeout and longest wait for more data"
    )
    allow_private_urls: bool = Field(
        False, description="Allow file_url to reach loopback/private addresses"
    )
    export_ttl_seconds: int = Field(
        24 * 3600, ge=60, description="How long an export file is kept and downloadable"
    )
    upload_retention_seconds: int = Field(
        3600, ge=0, description="How long the file of an ended import is kept; 0 = deleted "
        "at once"
    )
    export_streams: int = Field(
        8, ge=1, description="Streaming exports served at once (each holds one connection)"
    )
    export_lanes: int = Field(
        2, ge=1, le=8,
        description="Connections one streaming export of a large table reads with in parallel",
    )
    # --- export storage (docs/exports.md): S3-compatible when a bucket is set ---
    s3_bucket: str | None = Field(None, description="Bucket for export files; unset = local")
    s3_prefix: str = Field("exports/", description="Key prefix of export files in the bucket")
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, ...); unset = AWS"
    )
    s3_region: str | None = Field(None, description="Bucket region")
    s3_access_key_id: str | None = Field(
        None, repr=False, description="Access key; unset = boto3's default credential chain"
    )
    s3_secret_access_key: str | None = Field(None, repr=False, description="Secret key")
    s3_url_ttl_seconds: int = Field(
        3600, ge=1, description="Lifetime of a presigned download URL (capped by expiry)"
    )
    log_level: str = Field("INFO", description="Logging level")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="`json` lines, readable `console` lines, or `auto` (console on a TTY)"
    )
    # --- security and operations (docs/operations.md) ---
    api_keys: Annotated[list[str], NoDecode] = Field(
        [], repr=False,
        description="Accepted API keys, comma-separated or a JSON list; empty = no auth",
    )
    metrics_require_key: bool = Field(False, description="`/metrics` also needs an API key")
    health_require_key: bool = Field(False, description="`/health` also needs an API key")
    rate_limit_per_minute: int = Field(
        6000, ge=0, description="Sustained /v1 requests per minute per API key (or client "
        "address without keys), per server process; 0 = no limit"
    )
    rate_limit_burst: int | None = Field(
        None, ge=1, description="Requests allowed at once above the sustained rate; "
        "unset = a tenth of RATE_LIMIT_PER_MINUTE"
    )
    min_free_disk_bytes: int = Field(
        512 * 1024**2, ge=0, description="`/health` fails below this much free space in DATA_DIR"
    )
    fetch_allow_list: Annotated[list[str], NoDecode] = Field(
        [], description="Hosts or networks (CIDR) file_url may reach even when private, "
        "comma-separated or a JSON list"
    )
    fetch_max_seconds: float = Field(
        3600.0, gt=0, description="Total time limit of one file_url download"
    )
    worker_metrics_port: int | None = Field(
        None, description="`bulkport worker` serves its Prometheus metrics on this port"
    )

    @field_validator("api_keys", "fetch_allow_list", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """Accept a JSON list or comma-separated text (the usual form in an env file)."""
        if isinstance(value, str):
            text = value.strip()
            items = json.loads(text) if text.startswith("[") else text.split(",")
            return [str(i).strip() for i in items if str(i).strip()]
        return value

    @property
    def upload_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def export_dir(self) -> Path:
        return self.data_dir / "exports"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
