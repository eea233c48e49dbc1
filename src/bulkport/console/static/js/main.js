// The console's router (hash based, so the server serves one page) and the API key form.

import { ApiError, api, auth, onAuthProblem } from "./api.js";
import { exportJobPage, importJobPage } from "./job.js";
import { exportPage } from "./export.js";
import { importPage } from "./import.js";
import { jobsPage } from "./jobs.js";

const view = document.getElementById("view");
const panel = document.getElementById("key-panel");
const notice = document.getElementById("notice");
const forget = document.getElementById("forget-key");
let cleanup = () => {};

const ROUTES = [
  [/^#\/import(?:\?(.*))?$/, "import", (m) => importPage(view, new URLSearchParams(m[1]))],
  [/^#\/jobs(?:\?(.*))?$/, "jobs", (m) => jobsPage(view, new URLSearchParams(m[1]))],
  [/^#\/imports\/([\w-]+)$/, "jobs", (m) => importJobPage(view, m[1])],
  [/^#\/exports\/([\w-]+)$/, "jobs", (m) => exportJobPage(view, m[1])],
  [/^#\/export(?:\?(.*))?$/, "export", (m) => exportPage(view, new URLSearchParams(m[1]))],
];

function route() {
  cleanup();
  view.replaceChildren();
  notice.hidden = true;
  const hash = location.hash || "#/import";
  for (const [pattern, nav, page] of ROUTES) {
    const m = pattern.exec(hash);
    if (!m) continue;
    for (const a of document.querySelectorAll("[data-nav]")) {
      if (a.dataset.nav === nav) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    cleanup = page(m) || (() => {});
    return;
  }
  location.replace("#/import");
}

function showKeyForm(message) {
  panel.hidden = false;
  document.getElementById("key-message").textContent = message;
  document.getElementById("key-input").focus();
}

onAuthProblem((err) => {
  if (err.status === 429) {
    notice.textContent = err.message;
    notice.hidden = false;
    return;
  }
  if (panel.hidden || document.getElementById("key-message").textContent !== err.message) {
    showKeyForm(err.message);
  }
});

document.getElementById("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = document.getElementById("key-input");
  auth.set(input.value.trim());
  input.value = "";
  panel.hidden = true;
  forget.hidden = !auth.key;
  probe().then((ok) => { if (ok) route(); });
});

forget.addEventListener("click", () => {
  auth.set("");
  forget.hidden = true;
  probe();
});

/** One cheap request to learn whether a key is needed (or the stored one works). */
async function probe() {
  try {
    await api("/v1/imports?limit=1");
    return true;
  } catch (err) {
    return !(err instanceof ApiError && (err.status === 401 || err.status === 403));
  }
}

forget.hidden = !auth.key;
window.addEventListener("hashchange", route);
route();
probe();
