// The jobs page: imports and exports, newest first, filtered by kind, status and resource;
// live progress of running jobs, updated in place every POLL_MS (focus is kept).

import { api } from "./api.js";
import {
  $, ACTIVE, META, duration, num, options, poll, query, setBadge, setBar, template, when,
} from "./ui.js";

const LIMIT = 50;

export function jobsPage(root, params) {
  root.append(template("tpl-jobs"));
  const filters = $(root, "[data-filters]");
  const list = $(root, "[data-list]");
  options($(root, "[data-statuses]"), META.statuses, true);
  options($(root, "[data-resources]"), Object.keys(META.resources), true);
  for (const name of ["kind", "status", "resource"]) {
    if (params.get(name)) filters.elements[name].value = params.get(name);
  }
  filters.addEventListener("change", () => {
    const f = filters.elements;
    history.replaceState(null, "", `#/jobs${query({
      kind: f.kind.value, status: f.status.value, resource: f.resource.value })}`);
    refresh();
  });

  async function load() {
    const f = filters.elements;
    const kinds = f.kind.value ? [f.kind.value] : ["imports", "exports"];
    const pages = await Promise.all(kinds.map(async (kind) => {
      const q = { limit: LIMIT, status: f.status.value };
      if (kind === "imports") q.resource = f.resource.value;
      const page = await api(`/v1/${kind}${query(q)}`);
      return page.data.map((job) => ({ kind, job }));
    }));
    let jobs = pages.flat();
    if (f.resource.value) jobs = jobs.filter(({ job }) => job.resource === f.resource.value);
    jobs.sort((a, b) => (a.job.created_at < b.job.created_at ? 1 : -1));
    render(list, jobs.slice(0, LIMIT));
    $(root, "[data-empty]").hidden = jobs.length > 0;
  }

  let stop = poll(load);
  function refresh() { stop(); stop = poll(load); }
  return () => stop();
}

function render(list, jobs) {
  const existing = new Map([...list.children].map((li) => [li.dataset.key, li]));
  let previous = null;
  for (const { kind, job } of jobs) {
    const key = `${kind}/${job.job_id}`;
    let li = existing.get(key);
    if (!li) {
      li = template("tpl-job-item").firstElementChild;
      li.dataset.key = key;
      $(li, "[data-cancel]").addEventListener("click", async (e) => {
        e.target.disabled = true;
        try { await api(`/v1/${kind}/${job.job_id}/cancel`, { method: "POST" }); } catch { /* shown by next poll */ }
      });
    }
    existing.delete(key);
    update(li, kind, job);
    const anchor = previous ? previous.nextSibling : list.firstChild;
    if (li !== anchor) list.insertBefore(li, anchor);
    previous = li;
  }
  for (const li of existing.values()) li.remove();
}

function update(li, kind, job) {
  const link = $(li, "[data-link]");
  const what = kind === "imports" ? `Import ${job.resource}` : `Export ${job.resource} (${job.format})`;
  const name = kind === "imports" && job.file_name ? ` · ${job.file_name}` : "";
  link.textContent = `${what}${name}`;
  link.href = `#/${kind}/${job.job_id}`;
  setBadge($(li, "[data-status]"), job.status);
  const bar = $(li, "[data-bar]");
  bar.setAttribute("aria-label", `Progress of ${what}`);
  const active = ACTIVE.has(job.status);
  if (kind === "imports") {
    setBar(bar, job.progress);
    const total = job.total_records !== null ? num(job.total_records) : "?";
    $(li, "[data-counts]").textContent = `${num(job.processed_records)} / ${total} rows`
      + (job.error_records ? ` · ${num(job.error_records)} rejected` : "");
    $(li, "[data-rate]").textContent = job.rows_per_sec ? `· ${num(Math.round(job.rows_per_sec))} rows/s` : "";
    $(li, "[data-eta]").textContent = active && job.eta_seconds !== null ? `· ETA ${duration(job.eta_seconds)}` : "";
  } else {
    setBar(bar, active ? 0 : 1);
    $(li, "[data-counts]").textContent = `${num(job.record_count)} records`;
    $(li, "[data-rate]").textContent = "";
    $(li, "[data-eta]").textContent = "";
  }
  li.classList.toggle("active", active);
  const created = $(li, "[data-created]");
  created.dateTime = job.created_at;
  created.textContent = `· ${when(job.created_at)}`;
  const cancel = $(li, "[data-cancel]");
  cancel.hidden = !active;
  if (!active) cancel.disabled = false;
}
