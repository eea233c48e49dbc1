"""Job statuses and kinds, declared in :mod:`bulkport.status` (re-exported here)."""

from bulkport.status import JobKind, JobStatus

__all__ = ["JobKind", "JobStatus"]
