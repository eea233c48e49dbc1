"""Structured logs: JSON lines with bound context, the console format, the job summary."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from bulkport import metrics
from bulkport.jobs.report import job_log_context, report_finished, summary
from bulkport.jobs.status import JobKind
from bulkport.logs import ConsoleFormatter, ContextFilter, JsonFormatter, log_context


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Log lines of the ``bulkport`` loggers, as :func:`setup_logging` formats them."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("bulkport")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_the_bound_context(captured: io.StringIO) -> None:
    log = logging.getLogger("bulkport.test")
    with log_context(request_id="req-1"):
        log.info("outer")
        with log_context(job_id="job-9", request_id="req-2"):
            log.warning("inner %d", 5, extra={"rows": 3})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    log.info("outside")
    outer, inner, failed, outside = lines(captured)
    assert outer["request_id"] == "req-1" and "job_id" not in outer
    assert inner == {**inner, "message": "inner 5", "level": "warning", "job_id": "job-9",
                     "request_id": "req-2", "rows": 3, "logger": "bulkport.test"}
    assert datetime.strptime(str(inner["ts"]), "%Y-%m-%dT%H:%M:%S.%fZ")
    assert "ValueError: boom" in str(failed["exc"])
    assert "request_id" not in outside


def test_context_follows_threads_started_from_it(captured: io.StringIO) -> None:
    import contextvars

    log = logging.getLogger("bulkport.test")
    with log_context(job_id="job-t"):
        thread = threading.Thread(target=contextvars.copy_context().run,
                                  args=(lambda: log.info("from a thread"),))
        thread.start()
        thread.join()
    assert lines(captured)[0]["job_id"] == "job-t"


def test_console_format_is_readable() -> None:
    record = logging.makeLogRecord({"name": "bulkport.x", "levelname": "INFO", "levelno": 20,
                                    "msg": "hello %s", "args": ("you",), "job_id": "j1"})
    text = ConsoleFormatter().format(record)
    assert "INFO" in text and "bulkport.x: hello you" in text and "job_id=j1" in text
    assert not text.startswith("{")


def _job(**kw: object) -> dict[str, object]:
    started = datetime(2024, 1, 1, tzinfo=UTC)
    return {"id": "job-1", "request_id": "req-7", "resource": "users", "status": "completed",
            "processed_records": 1000, "successful_records": 950, "error_records": 50,
            "failed_batches": 0, "dry_run": False, "attempts": 1, "failure_reason": None,
            "started_at": started, "completed_at": started + timedelta(seconds=4), **kw}


def test_job_summary_numbers() -> None:
    fields = summary(JobKind.IMPORT, _job())
    assert fields["duration_ms"] == 4000
    assert fields["rows_per_sec"] == 250.0
    assert fields["error_rate"] == 0.05
    assert (fields["processed_records"], fields["successful_records"],
            fields["error_records"]) == (1000, 950, 50)
    empty = summary(JobKind.IMPORT, _job(processed_records=0, successful_records=0,
                                         error_records=0, completed_at=None))
    assert (empty["rows_per_sec"], empty["error_rate"], empty["duration_ms"]) == (0.0, 0.0, None)


def test_finished_job_logs_summary_and_warns_above_ten_percent(captured: io.StringIO) -> None:
    before = metrics.JOBS.labels("import", "users", "completed_with_errors")._value.get()
    job = _job(status="completed_with_errors", successful_records=850, error_records=150)
    with job_log_context(JobKind.IMPORT, job):
        report_finished(JobKind.IMPORT, job)
    summary_line, warning = lines(captured)
    assert summary_line["event"] == "job_summary"
    assert summary_line["job_id"] == "job-1" and summary_line["request_id"] == "req-7"
    assert summary_line["error_rate"] == 0.15 and summary_line["rows_per_sec"] == 250.0
    assert summary_line["duration_ms"] == 4000
    assert warning["level"] == "warning" and warning["event"] == "high_error_rate"
    assert warning["job_id"] == "job-1"
    after = metrics.JOBS.labels("import", "users", "completed_with_errors")._value.get()
    assert after == before + 1


def test_no_warning_at_or_below_ten_percent(captured: io.StringIO) -> None:
    report_finished(JobKind.IMPORT, _job(successful_records=900, error_records=100))
    assert [line["event"] for line in lines(captured)] == ["job_summary"]


def test_unfinished_jobs_are_not_reported(captured: io.StringIO) -> None:
    report_finished(JobKind.IMPORT, _job(status="pending"))
    assert captured.getvalue() == ""
