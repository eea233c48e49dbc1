// Job pages. An import: counters, progress, a live rows/s chart, errors grouped by code,
// a paginated error table filterable by code, rejected-record downloads, "import the
// fixed file". An export: status, counts, download. Both poll every POLL_MS while active.

import { api, download } from "./api.js";
import {
  $, ACTIVE, bytes, counters, drawChart, duration, num, poll, query, setBadge, setBar,
  showError, template, when,
} from "./ui.js";

const ERROR_PAGE = 50;
const CHART_SAMPLES = 120;

export function importJobPage(root, id) {
  root.append(template("tpl-import-job"));
  $(root, "[data-id]").textContent = id;
  const errorsCard = $(root, "[data-errors-card]");
  const codeSelect = $(root, "[data-code]");
  const samples = [];
  let last = null;
  let table = null;
  let shownErrors = -1;

  $(root, "[data-cancel]").addEventListener("click", async (e) => {
    e.target.disabled = true;
    try { render(await api(`/v1/imports/${id}/cancel`, { method: "POST" })); } catch (err) {
      e.target.disabled = false;
      showError($(root, "[data-failure]"), err);
    }
  });
  for (const button of root.querySelectorAll("[data-download]")) {
    button.addEventListener("click", async () => {
      const format = button.dataset.download;
      const code = codeSelect.value;
      button.disabled = true;
      try {
        await download(`/v1/imports/${id}/errors${query({ format, code })}`,
          `import-${id}-errors.${format}`);
      } catch (err) { showError($(root, "[data-failure]"), err); }
      button.disabled = false;
    });
  }

  function render(job) {
    const active = ACTIVE.has(job.status);
    setBadge($(root, "[data-status]"), job.status);
    setBar($(root, "[data-bar]"), job.progress);
    const total = job.total_records !== null ? num(job.total_records) : "?";
    $(root, "[data-progress-text]").textContent = `${num(job.processed_records)} / ${total} rows`
      + ` · ${Math.round(job.progress * 100)}%`
      + (job.rows_per_sec ? ` · ${num(Math.round(job.rows_per_sec))} rows/s` : "")
      + (active && job.eta_seconds !== null ? ` · ETA ${duration(job.eta_seconds)}` : "");
    counters($(root, "[data-counters]"), [
      ["Resource", job.resource], ["Mode", job.mode + (job.dry_run ? " (dry run)" : "")],
      ["File", `${job.file_name || "–"} (${bytes(job.file_size_bytes)})`],
      ["Total", total], ["Processed", num(job.processed_records)],
      ["Successful", num(job.successful_records)], ["Rejected", num(job.error_records)],
      ["Rows/s", job.rows_per_sec ? num(Math.round(job.rows_per_sec)) : "–"],
      ["Created", when(job.created_at)], ["Started", when(job.started_at)],
      ["Completed", when(job.completed_at)],
    ]);
    const failure = $(root, "[data-failure]");
    failure.hidden = !job.failure_reason;
    failure.textContent = job.failure_reason ? `Failed: ${job.failure_reason}` : "";
    const cancel = $(root, "[data-cancel]");
    cancel.hidden = !active;
    for (const b of root.querySelectorAll("[data-download]")) b.hidden = job.error_records === 0;
    const reimport = $(root, "[data-reimport]");
    reimport.href = `#/import${query({ resource: job.resource, mode: job.mode })}`;
    reimport.hidden = job.error_records === 0 && job.status !== "failed";
    // Instantaneous rate between two polls (the status's rows_per_sec is the average).
    const now = performance.now() / 1000;
    if (active && job.status === "processing") {
      if (last) {
        const dt = now - last.t;
        if (dt > 0) samples.push([now, Math.max(0, (job.processed_records - last.n) / dt)]);
      } else if (job.rows_per_sec) {
        samples.push([now, job.rows_per_sec]);
      }
      if (samples.length > CHART_SAMPLES) samples.shift();
      last = { t: now, n: job.processed_records };
      drawChart($(root, "[data-chart]"), samples);
    }
    renderGroups(job);
    if (job.error_records !== shownErrors) {
      shownErrors = job.error_records;
      if (table.onFirstPage()) table.load();
    }
    return active;
  }

  function renderGroups(job) {
    const entries = Object.entries(job.error_counts).sort((a, b) => b[1] - a[1]);
    errorsCard.hidden = entries.length === 0;
    const rows = entries.map(([code, count]) => {
      const tr = document.createElement("tr");
      tr.dataset.code = code;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "secondary small";
      button.textContent = "Show";
      button.setAttribute("aria-label", `Show ${code} errors`);
      button.addEventListener("click", () => { codeSelect.value = code; table.reset(); });
      for (const [text, cls] of [[code, "code"], [num(count), "num"]]) {
        const td = document.createElement("td");
        td.textContent = text;
        td.className = cls;
        tr.append(td);
      }
      const td = document.createElement("td");
      td.append(button);
      tr.append(td);
      return tr;
    });
    $(root, "[data-groups]").replaceChildren(...rows);
    const known = new Set([...codeSelect.options].map((o) => o.value));
    for (const [code] of entries) if (!known.has(code)) codeSelect.append(new Option(code, code));
  }

  table = errorTable(root, id, codeSelect);
  codeSelect.addEventListener("change", () => table.reset());
  return poll(async () => render(await api(`/v1/imports/${id}`)));
}

/** The paginated error table: a stack of cursors for Previous, next_cursor for Next. */
function errorTable(root, id, codeSelect) {
  const body = $(root, "[data-errors]");
  const prev = $(root, "[data-prev]");
  const next = $(root, "[data-next]");
  let cursors = [null];
  let nextCursor = null;
  let latest = 0;

  async function load() {
    const cursor = cursors[cursors.length - 1];
    const seq = ++latest;
    next.disabled = true; // until this page is in: a second click must not reuse its cursor
    prev.disabled = true;
    const page = await api(`/v1/imports/${id}/errors${query({
      limit: ERROR_PAGE, code: codeSelect.value, cursor })}`);
    if (seq !== latest) return; // a newer page (other code or cursor) was asked for meanwhile
    body.replaceChildren(...page.data.map((e) => {
      const tr = document.createElement("tr");
      const value = e.value === null || e.value === undefined ? "" :
        typeof e.value === "string" ? e.value : JSON.stringify(e.value);
      for (const [text, cls] of [[num(e.row), "num"], [e.field || "–", ""], [value, "value"],
        [e.code, "code"], [e.message, ""]]) {
        const td = document.createElement("td");
        td.textContent = text;
        if (cls) td.className = cls;
        tr.append(td);
      }
      return tr;
    }));
    nextCursor = page.next_cursor;
    next.disabled = !nextCursor;
    prev.disabled = cursors.length === 1;
    $(root, "[data-page]").textContent = `Page ${cursors.length}`;
  }
  next.addEventListener("click", () => { if (nextCursor) { cursors.push(nextCursor); load(); } });
  prev.addEventListener("click", () => { if (cursors.length > 1) { cursors.pop(); load(); } });
  return {
    load,
    onFirstPage: () => cursors.length === 1,
    reset() { cursors = [null]; load(); },
  };
}

export function exportJobPage(root, id) {
  root.append(template("tpl-export-job"));
  $(root, "[data-id]").textContent = id;
  const error = $(root, "[data-error]");
  let current = null;
  $(root, "[data-cancel]").addEventListener("click", async (e) => {
    e.target.disabled = true;
    try { render(await api(`/v1/exports/${id}/cancel`, { method: "POST" })); } catch (err) {
      e.target.disabled = false;
      showError(error, err);
    }
  });
  $(root, "[data-download]").addEventListener("click", async (e) => {
    const url = current && current.download_url;
    if (!url) return;
    showError(error, null);
    if (!url.startsWith("/")) { window.location.href = url; return; } // presigned S3 URL
    e.target.disabled = true;
    try { await download(url, `${current.resource}-${id}.${current.format}`); } catch (err) {
      showError(error, err);
    }
    e.target.disabled = false;
  });

  function render(job) {
    current = job;
    const active = ACTIVE.has(job.status);
    setBadge($(root, "[data-status]"), job.status);
    setBar($(root, "[data-bar]"), active ? 0 : 1);
    const filters = Object.entries(job.filters).map(([k, v]) => `${k}=${v.join("|")}`).join(", ");
    counters($(root, "[data-counters]"), [
      ["Resource", job.resource], ["Format", job.format],
      ["Fields", job.fields ? job.fields.join(", ") : "all"], ["Filters", filters || "none"],
      ["Records", num(job.record_count)], ["File size", bytes(job.file_size_bytes)],
      ["Created", when(job.created_at)], ["Completed", when(job.completed_at)],
      ["Expires", when(job.expires_at)],
    ]);
    const failure = $(root, "[data-failure]");
    failure.hidden = !job.failure_reason;
    failure.textContent = job.failure_reason ? `Failed: ${job.failure_reason}` : "";
    $(root, "[data-cancel]").hidden = !active;
    $(root, "[data-download]").hidden = !job.download_url;
    return active;
  }
  return poll(async () => render(await api(`/v1/exports/${id}`)));
}
