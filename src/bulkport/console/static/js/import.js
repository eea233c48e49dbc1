// The import page: file (picked or dropped), resource, mode, dry run; an upload with a
// progress bar (bytes and speed); then straight to the job page.

import { upload } from "./api.js";
import { $, META, bytes, options, setBar, showError, template } from "./ui.js";

export function importPage(root, params) {
  root.append(template("tpl-import"));
  const form = $(root, "[data-form]");
  const input = form.elements.file;
  const drop = $(root, "[data-drop]");
  const error = $(root, "[data-error]");
  options($(root, "[data-resources]"), Object.keys(META.resources));
  if (META.resources[params.get("resource")]) form.elements.resource.value = params.get("resource");
  if (META.modes.includes(params.get("mode"))) form.elements.mode.value = params.get("mode");

  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) input.files = e.dataTransfer.files;
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    showError(error, null);
    const file = input.files[0];
    if (!file) { showError(error, new Error("Choose a file to import.")); input.focus(); return; }
    const data = new FormData();
    data.append("resource", form.elements.resource.value);
    data.append("mode", form.elements.mode.value);
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
      showError(error, err);
      box.hidden = true;
      $(root, "[data-start]").disabled = false;
    }
  });
  return () => {};
}
