"""Job statuses and kinds: declared once, shared by the jobs runtime, the pipelines and the API.

JobStatus is mirrored by the PostgreSQL enum ``job_status``; JobKind by ``jobs.kind``.
"""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (JobStatus.PENDING, JobStatus.PROCESSING)


class JobKind(enum.StrEnum):
    IMPORT = "import"
    EXPORT = "export"
