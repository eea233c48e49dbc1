#!/usr/bin/env bash
# End-to-end check of a real `bulkport serve` with its embedded PostgreSQL, over HTTP.
#
#   bash scripts/e2e.sh [USERS_CSV]      (default: tests/data/users_huge.csv)
#
# Starts the server on a free port with a temporary data directory and no
# BULKPORT_DATABASE_URL (so the embedded database is used), imports the file and
# checks the exact outcome, the error downloads, idempotency, cancel and a bad
# request; then stops the server, its workers and its database. Exits non-zero
# if any check fails. Needs bash, curl and Python (PYTHON, else .venv/bin/python,
# else python3) with bulkport installed; Python also parses the JSON answers.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CSV="${1:-$REPO/tests/data/users_huge.csv}"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"
else PY=python3
fi
# Expected outcome of users_huge.csv (SPEC §7).
OK_INSERT=9667 ERR_INSERT=333 OK_UPSERT=9700 ERR_UPSERT=300
CODES='{"duplicate_email": 33, "invalid_email_format": 201, "invalid_role": 167}'
START_TIMEOUT_SECONDS=120
JOB_TIMEOUT_SECONDS=300

PASSED=0
FAILED=0
FAILURES=()
SERVER_PID=""
WORK=""

say() { printf '%s\n' "$*"; }
pass() { PASSED=$((PASSED + 1)); say "  ok    $1"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$1"); say "  FAIL  $1${2:+ ($2)}"; }
check() { # check DESCRIPTION EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "expected '$2', got '$3'"; fi
}
die() { fail "$1"; exit 1; }

# json FILE EXPR: print the Python expression EXPR over the JSON document `d` of FILE.
json() { "$PY" -c "import json, sys; d = json.load(open(sys.argv[1])); print($2)" "$1"; }

# http METHOD PATH [curl args...]: body in $WORK/body, headers in $WORK/headers, sets STATUS.
http() {
    local method="$1" path="$2"
    shift 2
    STATUS="$(curl -sS -X "$method" -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}' \
        --max-time 60 "$@" "$BASE$path")" || STATUS="000"
}
header() { grep -i "^$1:" "$WORK/headers" | head -n1 | cut -d' ' -f2- | tr -d '\r'; }
children() { # PIDs of the child processes of $1
    if command -v pgrep >/dev/null; then pgrep -P "$1"; else ps -o pid= --ppid "$1"; fi
}

cleanup() {
    local code=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        local workers
        workers="$(children "$SERVER_PID" | tr '\n' ' ')"
        kill -TERM "$SERVER_PID"
        for _ in $(seq 1 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            fail "server stops within 30 s of SIGTERM"
            kill -KILL "$SERVER_PID" 2>/dev/null
        else
            pass "server stopped on SIGTERM"
        fi
        local left="" pid
        for _ in $(seq 1 50); do
            left=""
            for pid in $workers; do
                if kill -0 "$pid" 2>/dev/null && ! grep -q postgres "/proc/$pid/cmdline" 2>/dev/null
                then left="$left $pid"; fi
            done
            [ -z "$left" ] && break
            sleep 0.1
        done
        for pid in $left; do kill -KILL "$pid" 2>/dev/null; done
        if [ -z "$left" ]; then pass "worker processes stopped with the server"
        else fail "worker processes stopped with the server" "still running:$left"; fi
    fi
    if [ -n "$WORK" ] && [ -f "$WORK/data/pg/postmaster.pid" ]; then
        # The embedded server outlives `serve` by design (workers and restarts rejoin it).
        # SIGINT is PostgreSQL's "fast shutdown"; unlike pg_ctl it also works as root, where
        # pgserver runs PostgreSQL as another system user.
        local pg
        pg="$(head -n1 "$WORK/data/pg/postmaster.pid")"
        kill -INT "$pg" 2>/dev/null
        for _ in $(seq 1 600); do kill -0 "$pg" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pg" 2>/dev/null || [ -f "$WORK/data/pg/postmaster.pid" ]; then
            fail "embedded PostgreSQL stopped" "postmaster $pg still running"
        else
            pass "embedded PostgreSQL stopped"
        fi
    fi
    say ""
    if [ "$FAILED" -eq 0 ] && [ "$code" -eq 0 ]; then
        say "e2e: all $PASSED checks passed"
        [ -n "$WORK" ] && rm -rf "$WORK"
        exit 0
    fi
    say "e2e: $FAILED of $((PASSED + FAILED)) checks FAILED:"
    for f in "${FAILURES[@]}"; do say "  - $f"; done
    if [ -n "$WORK" ] && [ -f "$WORK/server.log" ]; then
        say "--- last lines of the server log ($WORK/server.log) ---"
        tail -n 40 "$WORK/server.log"
    fi
    exit 1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- start -------------------------------------------------------------------------------

[ -f "$CSV" ] || die "input file exists: $CSV"
command -v curl >/dev/null || die "curl is installed"
"$PY" -c "import bulkport" 2>/dev/null || die "bulkport is importable by $PY"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bulkport-e2e.XXXXXX")"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"

say "e2e: $CSV -> bulkport serve on $BASE, data in $WORK (embedded PostgreSQL)"
(cd "$WORK" && exec env -u BULKPORT_DATABASE_URL -u BULKPORT_API_KEYS \
    BULKPORT_DATA_DIR="$WORK/data" BULKPORT_POLL_INTERVAL_SECONDS=0.1 \
    "$PY" -m bulkport serve --host 127.0.0.1 --port "$PORT" --workers 2 \
    >"$WORK/server.log" 2>&1) &
SERVER_PID=$!

deadline=$((SECONDS + START_TIMEOUT_SECONDS))
until curl -sf -o /dev/null --max-time 2 "$BASE/health"; do
    kill -0 "$SERVER_PID" 2>/dev/null || die "server process starts"
    [ "$SECONDS" -lt "$deadline" ] || die "server healthy within ${START_TIMEOUT_SECONDS}s"
    sleep 0.3
done
pass "server healthy at $BASE/health"
[ -f "$WORK/data/pg/postmaster.pid" ] && pass "embedded PostgreSQL runs in the data directory" \
    || fail "embedded PostgreSQL runs in the data directory"

# --- import users_huge.csv ---------------------------------------------------------------

# wait_job ID: poll until the job is terminal; the final document stays in $WORK/body.
wait_job() {
    local deadline=$((SECONDS + JOB_TIMEOUT_SECONDS)) status
    while :; do
        http GET "/v1/imports/$1"
        status="$(json "$WORK/body" 'd["status"]' 2>/dev/null)"
        case "$status" in pending|processing) ;; *) return 0 ;; esac
        [ "$SECONDS" -lt "$deadline" ] || { fail "job $1 finishes" "still $status"; return 1; }
        sleep 0.2
    done
}

http POST /v1/imports -F resource=users -F "file=@$CSV"
check "POST /v1/imports -> 202" 202 "$STATUS"
JOB="$(json "$WORK/body" 'd["job_id"]')" || die "the 202 names a job_id"
check "Location header" "/v1/imports/$JOB" "$(header location)"
wait_job "$JOB"
check "insert: status" completed_with_errors "$(json "$WORK/body" 'd["status"]')"
check "insert: successful / rejected" "$OK_INSERT/$ERR_INSERT" \
    "$(json "$WORK/body" '"%s/%s" % (d["successful_records"], d["error_records"])')"
check "insert: progress 1.0, errors[] capped at 100" "1.0 100" \
    "$(json "$WORK/body" '"%s %s" % (d["progress"], len(d["errors"]))')"

# Every error entry, page after page.
: >"$WORK/codes"
cursor=""
for _ in $(seq 1 1000); do
    http GET "/v1/imports/$JOB/errors?limit=100${cursor:+&cursor=$cursor}"
    [ "$STATUS" = 200 ] || { fail "GET errors page -> 200" "got $STATUS"; break; }
    cursor="$("$PY" -c 'import json, sys
d = json.load(open(sys.argv[1]))
with open(sys.argv[2], "a") as out:
    out.writelines(e["code"] + "\n" for e in d["data"])
print(d["next_cursor"] or "")' "$WORK/body" "$WORK/codes")"
    [ -n "$cursor" ] || break
done
check "error entries by code (all pages)" "$CODES" "$("$PY" -c 'import collections, json, sys
print(json.dumps(dict(sorted(collections.Counter(open(sys.argv[1]).read().split()).items()))))' \
    "$WORK/codes")"

http GET "/v1/imports/$JOB/errors?format=ndjson"
check "errors as NDJSON -> 200" 200 "$STATUS"
check "NDJSON: one line per rejected record, {row, record, errors}" "$ERR_INSERT True" \
    "$("$PY" -c 'import json, sys
lines = [json.loads(x) for x in open(sys.argv[1])]
print(len(lines), all(set(x) == {"row", "record", "errors"} for x in lines))' "$WORK/body")"

http GET "/v1/imports/$JOB/errors?format=csv"
cp "$WORK/body" "$WORK/rejected.csv"
check "errors as CSV -> 200" 200 "$STATUS"
check "CSV: original columns + _row,_errors" "$(head -n1 "$CSV" | tr -d '\r'),_row,_errors" \
    "$(head -n1 "$WORK/rejected.csv" | tr -d '\r')"
check "CSV: one row per rejected record" "$ERR_INSERT" \
    "$("$PY" -c 'import csv, sys; print(sum(1 for _ in csv.DictReader(open(sys.argv[1]))))' \
    "$WORK/rejected.csv")"

http POST /v1/imports -F resource=users -F mode=upsert -F "file=@$CSV"
check "POST upsert -> 202" 202 "$STATUS"
UPSERT="$(json "$WORK/body" 'd["job_id"]')"
wait_job "$UPSERT"
check "upsert: successful / rejected" "$OK_UPSERT/$ERR_UPSERT" \
    "$(json "$WORK/body" '"%s/%s" % (d["successful_records"], d["error_records"])')"

# The rejected-records CSV goes back in as is: it parses and every record is rejected again.
http POST /v1/imports -F resource=users -F "file=@$WORK/rejected.csv"
REIMPORT="$(json "$WORK/body" 'd["job_id"]')"
wait_job "$REIMPORT"
check "re-import of the CSV download: 0 written / $ERR_INSERT rejected, none malformed" \
    "0/$ERR_INSERT False" "$(json "$WORK/body" \
    '"%s/%s %s" % (d["successful_records"], d["error_records"], "malformed_record" in d["error_counts"])')"

# --- idempotency, cancel, bad request ----------------------------------------------------

KEY="e2e-$(date +%s)-$$"
printf 'email,name,role\nidem-%s@example.com,Idem,reader\n' "$$" >"$WORK/one.csv"
printf 'email,name,role\nother-%s@example.com,Other,reader\n' "$$" >"$WORK/other.csv"
http POST /v1/imports -H "Idempotency-Key: $KEY" -F resource=users -F "file=@$WORK/one.csv"
check "Idempotency-Key, new request -> 202" 202 "$STATUS"
FIRST="$(json "$WORK/body" 'd["job_id"]' 2>/dev/null)"
http POST /v1/imports -H "Idempotency-Key: $KEY" -F resource=users -F "file=@$WORK/one.csv"
check "same key, same request -> 200" 200 "$STATUS"
check "same key, same request -> the same job" "$FIRST" "$(json "$WORK/body" 'd["job_id"]')"
http POST /v1/imports -H "Idempotency-Key: $KEY" -F resource=users -F "file=@$WORK/other.csv"
check "same key, other file -> 409" 409 "$STATUS"
check "409 code" idempotency_conflict "$(json "$WORK/body" 'd["error"]')"
wait_job "$FIRST"

http POST "/v1/imports/$JOB/cancel"
check "cancel a finished job -> 409" 409 "$STATUS"

http POST /v1/imports -H "X-Request-ID: e2e-bad-resource" -F resource=posts -F "file=@$WORK/one.csv"
check "unknown resource -> 400" 400 "$STATUS"
check "400 in the common error shape" "bad_request e2e-bad-resource users,articles,comments" \
    "$(json "$WORK/body" '" ".join([d["error"], d["request_id"], ",".join(d["details"]["allowed"])])')"
check "X-Request-ID echoed" e2e-bad-resource "$(header x-request-id)"

# --- exports -----------------------------------------------------------------------------

# Streaming: the same rows in every format, in id order.
http GET "/v1/exports?resource=users&format=ndjson" -H "Accept-Encoding: identity"
check "GET /v1/exports ndjson -> 200" 200 "$STATUS"
check "ndjson: chunked application/x-ndjson" "chunked application/x-ndjson" \
    "$(header transfer-encoding) $(header content-type)"
cp "$WORK/body" "$WORK/users.ndjson"
USERS="$("$PY" -c 'import json, sys
ids = [json.loads(x)["id"] for x in open(sys.argv[1])]
print(len(ids) if ids == sorted(ids) else "not in id order")' "$WORK/users.ndjson")"
[ "$USERS" -ge "$OK_INSERT" ] 2>/dev/null && pass "ndjson: every user, in id order ($USERS)" \
    || fail "ndjson: every user, in id order" "$USERS"
http GET "/v1/exports?resource=users&format=csv"
check "csv: header row" "id,email,name,role,active,created_at,updated_at" \
    "$(head -n1 "$WORK/body" | tr -d '\r')"
check "csv: one row per user" "$USERS" \
    "$("$PY" -c 'import csv, sys; print(sum(1 for _ in csv.DictReader(open(sys.argv[1], newline=""))))' \
    "$WORK/body")"
http GET "/v1/exports?resource=users&format=json"
check "json: one array of every user" "$USERS" "$(json "$WORK/body" 'len(d)')"

http GET "/v1/exports?resource=users&fields=id,role&role=admin&created_at_from=2000-01-01"
check "projection + filters: only admins, only id and role" "True" "$("$PY" -c 'import json, sys
rows = [json.loads(x) for x in open(sys.argv[1])]
print(bool(rows) and all(list(r) == ["id", "role"] and r["role"] == "admin" for r in rows))' \
    "$WORK/body")"

curl -sS -o "$WORK/users.ndjson.gz" -D "$WORK/headers" -H "Accept-Encoding: gzip" \
    "$BASE/v1/exports?resource=users&format=ndjson"
check "gzip on Accept-Encoding: gzip" gzip "$(header content-encoding)"
check "gzip: the same bytes" True "$("$PY" -c 'import gzip, sys
print(gzip.decompress(open(sys.argv[1], "rb").read()) == open(sys.argv[2], "rb").read())' \
    "$WORK/users.ndjson.gz" "$WORK/users.ndjson")"

http GET "/v1/exports?resource=users&fields=id,password"
check "unknown field -> 400 listing the fields" \
    "400 id,email,name,role,active,created_at,updated_at" \
    "$STATUS $(json "$WORK/body" '",".join(d["details"]["allowed"])')"
http GET "/v1/exports?resource=users&created_at_from=yesterday"
check "malformed date -> 400" 400 "$STATUS"

# Export job: 202, completed, the download is the streamed file.
http GET "/v1/exports?resource=users&format=csv"
cp "$WORK/body" "$WORK/users.csv"
http POST /v1/exports -H "Content-Type: application/json" -H "Idempotency-Key: exp-$KEY" \
    -d '{"resource": "users", "format": "csv"}'
check "POST /v1/exports -> 202" 202 "$STATUS"
EXPORT="$(json "$WORK/body" 'd["job_id"]')"
http POST /v1/exports -H "Content-Type: application/json" -H "Idempotency-Key: exp-$KEY" \
    -d '{"resource": "users", "format": "csv"}'
check "same key, same export -> 200, the same job" "200 $EXPORT" \
    "$STATUS $(json "$WORK/body" 'd["job_id"]')"
deadline=$((SECONDS + JOB_TIMEOUT_SECONDS))
while :; do
    http GET "/v1/exports/$EXPORT"
    status="$(json "$WORK/body" 'd["status"]' 2>/dev/null)"
    case "$status" in pending|processing) ;; *) break ;; esac
    [ "$SECONDS" -lt "$deadline" ] || break
    sleep 0.2
done
check "export job: completed, record_count" "completed $USERS" \
    "$(json "$WORK/body" '"%s %s" % (d["status"], d["record_count"])')"
URL="$(json "$WORK/body" 'd["download_url"]')"
check "download_url" "/v1/exports/$EXPORT/download" "$URL"
http GET "$URL"
check "download = the streamed CSV" "200 True" "$STATUS $("$PY" -c 'import sys
print(open(sys.argv[1], "rb").read() == open(sys.argv[2], "rb").read())' \
    "$WORK/body" "$WORK/users.csv")"
http POST "/v1/exports/$EXPORT/cancel"
check "cancel a finished export -> 409" 409 "$STATUS"
