// The export page: resource, format, fields (checkboxes, all / none) and the filters the
// export API accepts for the resource (from the page's metadata, i.e. export_spec.py).
// Then either download the stream now or start an export job and go to its page.

import { api, download } from "./api.js";
import { $, META, bytes, options, query, showError, template } from "./ui.js";

export function exportPage(root, params) {
  root.append(template("tpl-export"));
  const form = $(root, "[data-form]");
  const status = $(root, "[data-status]");
  const error = $(root, "[data-error]");
  const fieldsBox = $(root, "[data-fields]");
  const filterBox = $(root, "[data-filter-inputs]");
  options($(root, "[data-resources]"), Object.keys(META.resources));
  options($(root, "[data-formats]"), ["csv", "ndjson", "json"]);
  if (META.resources[params.get("resource")]) form.elements.resource.value = params.get("resource");

  function build() {
    const res = META.resources[form.elements.resource.value];
    fieldsBox.replaceChildren(...res.fields.map((f) => {
      const label = document.createElement("label");
      label.className = "check";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.name = "fields";
      box.value = f.name;
      box.checked = true;
      label.append(box, ` ${f.name}`);
      return label;
    }));
    filterBox.replaceChildren(...res.filters.map((f) => {
      const label = document.createElement("label");
      const suffix = { ">=": " from", "<=": " to", in: " is" }[f.op] || "";
      const name = f.op === "contains" ? "has tag" : `${f.field}${suffix}`;
      label.append(`${name} `);
      let input;
      if (f.choices) {
        input = document.createElement("select");
        input.append(new Option("any", ""));
        options(input, f.choices, true);
      } else {
        input = document.createElement("input");
        input.type = f.kind === "timestamp" ? "datetime-local" : "text";
        if (f.kind === "timestamp") input.step = "1";
      }
      input.name = `filter:${f.param}`;
      input.dataset.param = f.param;
      label.append(input);
      return label;
    }));
  }
  form.elements.resource.addEventListener("change", build);
  build();
  $(root, "[data-all]").addEventListener("click", () => check(true));
  $(root, "[data-none]").addEventListener("click", () => check(false));
  function check(on) { for (const b of fieldsBox.querySelectorAll("input")) b.checked = on; }

  function request() {
    const fields = [...fieldsBox.querySelectorAll("input:checked")].map((b) => b.value);
    if (!fields.length) throw new Error("Choose at least one field.");
    const filters = {};
    for (const input of filterBox.querySelectorAll("[data-param]")) {
      if (input.value.trim()) filters[input.dataset.param] = input.value.trim();
    }
    return { resource: form.elements.resource.value, format: form.elements.format.value,
      fields, filters };
  }

  async function run(action) {
    showError(error, null);
    status.textContent = "";
    let spec;
    try { spec = request(); } catch (err) { showError(error, err); return; }
    for (const b of form.querySelectorAll("button")) b.disabled = true;
    try {
      await action(spec);
    } catch (err) { status.textContent = ""; showError(error, err); }
    for (const b of form.querySelectorAll("button")) b.disabled = false;
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    run(async (spec) => {
      status.textContent = "Downloading…";
      const q = query({ resource: spec.resource, format: spec.format,
        fields: spec.fields.join(","), ...spec.filters });
      const size = await download(`/v1/exports${q}`, `${spec.resource}.${spec.format}`);
      status.textContent = `Downloaded ${bytes(size)}.`;
    });
  });
  $(root, "[data-job]").addEventListener("click", () => run(async (spec) => {
    const job = await api("/v1/exports", { method: "POST", json: spec });
    location.hash = `#/exports/${job.job_id}`;
  }));
  return () => {};
}
