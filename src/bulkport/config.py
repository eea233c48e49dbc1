"""Settings, read once from ``BULKPORT_*`` environment variables.

Every setting is documented in the README's configuration table; the field
descriptions here are the source of that table.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BULKPORT_", extra="ignore")

    database_url: str | None = Field(
        None, description="PostgreSQL URL; unset = embedded server in DATA_DIR/pg"
    )
    data_dir: Path = Field(Path("./data"), description="Uploads, export files, embedded DB")
    host: str = Field("127.0.0.1", description="Address `serve` listens on")
    port: int = Field(8000, description="Port `serve` listens on")
    workers: int = Field(4, ge=0, description="Worker processes started by `serve`")
    batch_size: int = Field(5000, ge=1, le=100_000, description="Records per committed batch")
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
    allowed_roles: list[str] = Field(
        ["admin", "author", "reader"], description="Accepted user roles (JSON list)"
    )
    fetch_timeout_seconds: float = Field(60.0, gt=0, description="file_url download timeout")
    allow_private_urls: bool = Field(
        False, description="Allow file_url to reach loopback/private addresses"
    )
    export_ttl_seconds: int = Field(
        24 * 3600, ge=60, description="How long an export file is kept and downloadable"
    )
    log_level: str = Field("INFO", description="Logging level")

    @property
    def upload_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def export_dir(self) -> Path:
        return self.data_dir / "exports"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
