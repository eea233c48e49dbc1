// The import page: file (picked or dropped), resource, mode, delimiter, encoding, dry run;
// the mapping step (a preview of the file, re-run as the mapping changes); an upload with a
// progress bar (bytes and speed); then straight to the job page.

import { postForm, upload } from "./api.js";
import { applyMap, chosenMap, renderPreview } from "./mapping.js";
import { $, META, bytes, options, setBar, showError, template } from "./ui.js";

/** Wait after the last change before previewing again (ms): one request per burst of edits. */
const PREVIEW_DEBOUNCE_MS = 300;

/** The form's own fields (resource, mode, delimiter and encoding when set) into a FormData. */
function formFields(form) {
  const data = new FormData();
  data.append("resource", form.elements.resource.value);
  data.append("mode", form.elements.mode.value);
  for (const name of ["delimiter", "encoding"]) {
    if (form.elements[name].value) data.append(name, form.elements[name].value);
  }
  return data;
}

/** A 422 for missing fields: its message, plus the suggested map spelled out. */
function importError(err) {
  const map = err.body && err.body.details && err.body.details.suggested_column_map;
  if (!map || !Object.keys(map).length) return err;
  const pairs = Object.entries(map).map(([c, f]) => `${c} → ${f}`).join(", ");
  return new Error(`${err.message} Suggested mapping: ${pairs}.`);
}

export function importPage(root, params) {
  root.append(template("tpl-import"));
  const form = $(root, "[data-form]");
  const input = form.elements.file;
  const drop = $(root, "[data-drop]");
  const error = $(root, "[data-error]");
  options($(root, "[data-resources]"), Object.keys(META.resources));
  if (META.resources[params.get("resource")]) form.elements.resource.value = params.get("resource");
  if (META.modes.includes(params.get("mode"))) form.elements.mode.value = params.get("mode");

  const mapping = $(root, "[data-mapping]");
  const previewStatus = $(root, "[data-preview-status]");
  const previewError = $(root, "[data-preview-error]");
  let preview = null; // the last preview answer, for the file and resource now chosen
  let inFlight = null; // AbortController of the preview being fetched
  let timer = null;

  async function runPreview(map) {
    const file = input.files[0];
    if (inFlight) inFlight.abort();
    if (!file) { mapping.hidden = true; preview = null; return; }
    const data = formFields(form);
    if (map && Object.keys(map).length) data.append("column_map", JSON.stringify(map));
    data.append("file", file, file.name);
    const controller = new AbortController();
    inFlight = controller;
    mapping.hidden = false;
    previewStatus.textContent = `Reading ${file.name}…`;
    try {
      const answer = await postForm("/v1/imports/preview", data, controller.signal);
      if (controller.signal.aborted) return;
      preview = answer;
      showError(previewError, null);
      renderPreview(mapping, preview);
      previewStatus.textContent = `Preview of ${file.name}: ${preview.records.filter((r) => !r.valid).length} of ${preview.records.length} records shown have errors.`;
    } catch (err) {
      if (controller.signal.aborted) return;
      previewStatus.textContent = "";
      showError(previewError, err);
    } finally {
      if (inFlight === controller) inFlight = null;
    }
  }

  /** Preview again shortly, with the map the selects show (none: a new file or resource). */
  function schedule(keepMap) {
    clearTimeout(timer);
    if (inFlight) inFlight.abort(); // its answer would put back the selects just changed
    const map = keepMap ? chosenMap(mapping, preview) : null;
    if (!keepMap) preview = null;
    timer = setTimeout(() => runPreview(map), PREVIEW_DEBOUNCE_MS);
  }

  input.addEventListener("change", () => schedule(false));
  form.elements.resource.addEventListener("change", () => schedule(false));
  for (const name of ["mode", "delimiter", "encoding"]) {
    form.elements[name].addEventListener("change", () => schedule(true));
  }
  $(mapping, "[data-columns]").addEventListener("change", () => schedule(true));
  $(mapping, "[data-suggest]").addEventListener("click", () => {
    if (!preview) return;
    applyMap(mapping, preview, preview.suggested_column_map);
    schedule(true);
  });

  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files; schedule(false); }
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    showError(error, null);
    const file = input.files[0];
    if (!file) { showError(error, new Error("Choose a file to import.")); input.focus(); return; }
    clearTimeout(timer);
    if (inFlight) inFlight.abort();
    const data = formFields(form);
    const map = chosenMap(mapping, preview);
    if (Object.keys(map).length) data.append("column_map", JSON.stringify(map));
    data.append("dry_run", form.elements.dry_run.checked ? "true" : "false");
    data.append("file", file, file.name);
    const box = $(root, "[data-upload]");
    const bar = $(root, "[data-upload-bar]");
    const text = $(root, "[data-upload-text]");
    box.hidden = false;
    $(root, "[data-start]").disabled = true;
    const started = performance.now();
    const onProgress = (loaded, total) => {
      const seconds = (performance.now() - started) / 1000;
      const speed = seconds > 0 ? `${bytes(loaded / seconds)}/s` : "";
      setBar(bar, total ? loaded / total : 0);
      text.textContent = `${bytes(loaded)} of ${bytes(total || file.size)} uploaded · ${speed}`;
    };
    onProgress(0, file.size);
    try {
      const job = await upload("/v1/imports", data, onProgress);
      location.hash = `#/imports/${job.job_id}`;
    } catch (err) {
      showError(error, importError(err));
      box.hidden = true;
      $(root, "[data-start]").disabled = false;
    }
  });
  return () => { clearTimeout(timer); if (inFlight) inFlight.abort(); };
}
