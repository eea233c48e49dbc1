"""The client commands' arguments (``import``, ``export``, ``jobs``) and how they are run.

:func:`run` turns whatever a command raises into one line on stderr and an
exit code: a :class:`CliError` its own, Ctrl-C 130; never a traceback for a
failure the user can act on.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from bulkport.client.http import DEFAULT_URL, CliError, ExitCode
from bulkport.client.watch import print_json

EXIT_CODES = """\
exit codes: 0 done, no rejected record; 1 job failed or cancelled, server error or
unreachable; 2 usage error (also a 400 from the server); 3 completed with rejected
records; 4 API key missing or refused; 5 --wait timed out; 130 interrupted (Ctrl-C)"""


def _connection_options(nested: bool = False) -> argparse.ArgumentParser:
    """--url, --api-key, --json; ``nested`` (under ``jobs``) leaves ``jobs``' values alone."""
    p = argparse.ArgumentParser(add_help=False)
    # argparse lets a subparser's defaults overwrite what the parent parsed.
    keep: dict[str, Any] = {"default": argparse.SUPPRESS} if nested else {}
    group = p.add_argument_group("connection")
    group.add_argument("--url", help=f"server URL (BULKPORT_URL; default {DEFAULT_URL})", **keep)
    group.add_argument("--api-key", help="API key (BULKPORT_API_KEY)", **keep)
    group.add_argument("--json", action="store_true", **keep,
                       help="print one JSON document instead of progress bars and tables")
    return p


def _wait_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="wait for the job to end, with progress")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="with --wait: give up after this long (exit 5; the job goes on)")


def add_client_commands(sub: Any) -> None:
    """Add ``import``, ``export`` and ``jobs`` to the ``bulkport`` subcommands."""
    from bulkport.client.exports import FORMATS, cmd_export
    from bulkport.client.imports import cmd_import
    from bulkport.client.jobs import cmd_jobs

    conn = _connection_options()
    nested = _connection_options(nested=True)
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("import", parents=[conn], formatter_class=fmt, epilog=EXIT_CODES,
                       help="upload a file to a running server and import it",
                       description="Upload FILE to a running bulkport server (streamed) and "
                                   "start an import job; --wait follows it to the end.")
    p.set_defaults(func=wrap(cmd_import))
    p.add_argument("file", metavar="FILE", help="CSV, NDJSON or JSON file (optionally .gz)")
    p.add_argument("--resource", "-r", required=True, help="users, articles or comments")
    p.add_argument("--mode", choices=("insert", "upsert"), default="insert",
                   help="insert (default) or upsert")
    p.add_argument("--dry-run", action="store_true", help="validate everything, write nothing")
    p.add_argument("--format", choices=("csv", "tsv", "ndjson", "json"),
                   help="file format (default: from the file name or content)")
    p.add_argument("--delimiter", metavar="CHAR",
                   help="CSV delimiter: , ; | or tab (default: detected from the header)")
    p.add_argument("--encoding", metavar="NAME",
                   help="text encoding, e.g. cp1252, latin-1, utf-16 (default: UTF-8, or "
                        "what a byte-order mark says)")
    p.add_argument("--map", action="append", metavar="SOURCE=FIELD",
                   help="read column SOURCE as FIELD, e.g. --map Email=email (repeatable)")
    p.add_argument("--preview", action="store_true",
                   help="show how the server would read FILE (columns, first records and "
                        "their errors) and import nothing")
    p.add_argument("--limit", type=int, metavar="N",
                   help="with --preview: records shown (default 20, at most 1000)")
    p.add_argument("--idempotency-key", metavar="KEY",
                   help="a retry with the same key returns the first job instead of a new one")
    _wait_options(p)
    p.add_argument("--errors-out", metavar="PATH",
                   help="save the rejected records to PATH (.csv or .ndjson); implies --wait")

    p = sub.add_parser("export", parents=[conn], formatter_class=fmt, epilog=EXIT_CODES,
                       help="stream an export from a running server to a file",
                       description="Stream a resource from a running bulkport server.")
    p.set_defaults(func=wrap(cmd_export))
    p.add_argument("--resource", "-r", required=True, help="users, articles or comments")
    p.add_argument("--format", choices=FORMATS,
                   help="default: from the -o extension, else ndjson")
    p.add_argument("--fields", metavar="A,B", help="only these fields, in this order")
    p.add_argument("--filter", action="append", metavar="KEY=VALUE",
                   help="e.g. role=admin, status=published, tag=python, "
                        "created_at_from=2024-01-01T00:00:00Z (repeatable)")
    p.add_argument("-o", "--output", default="-", metavar="PATH",
                   help="output file, or - for stdout (default)")
    p.add_argument("--gzip", action="store_true",
                   help="write the gzip stream as sent (implied by a .gz path)")

    p = sub.add_parser("jobs", parents=[conn], formatter_class=fmt, epilog=EXIT_CODES,
                       help="list, show, cancel import jobs and read their errors",
                       description="jobs [list] | show ID [--wait] | cancel ID | "
                                   "errors ID [-o PATH]")
    p.set_defaults(func=wrap(cmd_jobs), action=None)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    lst = actions.add_parser("list", parents=[nested], help="recent import jobs, newest first")
    lst.add_argument("--status", help="only jobs in this status")
    lst.add_argument("--resource", help="only jobs of this resource")
    lst.add_argument("--limit", type=int, default=20, help="at most this many (1-100)")
    show = actions.add_parser("show", parents=[nested], help="one job's status and error counts")
    show.add_argument("job_id", metavar="ID")
    _wait_options(show)
    cancel = actions.add_parser("cancel", parents=[nested], help="cancel a pending or running job")
    cancel.add_argument("job_id", metavar="ID")
    errors = actions.add_parser("errors", parents=[nested], help="a job's errors")
    errors.add_argument("job_id", metavar="ID")
    errors.add_argument("-o", "--output", metavar="PATH",
                        help="save the rejected records to PATH (.csv or .ndjson)")
    errors.add_argument("--limit", type=int, help="show at most this many error entries")


def wrap(func: Callable[[argparse.Namespace], ExitCode]) -> Callable[[argparse.Namespace], None]:
    """The command as ``bulkport.cli`` calls it: it exits with the command's code."""
    def call(args: argparse.Namespace) -> None:
        sys.exit(run(func, args))

    return call


def run(func: Callable[[argparse.Namespace], ExitCode], args: argparse.Namespace) -> int:
    """Run a client command; its exit code (errors printed as one line on stderr)."""
    try:
        return int(func(args))
    except CliError as exc:
        if getattr(args, "json", False) and exc.body is not None:
            print_json(exc.body)
        print(f"bulkport: {exc.message}", file=sys.stderr)
        return int(exc.code)
    except KeyboardInterrupt:
        print("bulkport: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:  # `bulkport export ... | head`: the reader has gone
        return int(ExitCode.OK)
