// The import page's mapping step: what POST /v1/imports/preview says about the chosen file
// (detected format, delimiter, encoding), one field <select> per source column, the
// required fields no column feeds, and the first records with their errors.

import { $, counters } from "./ui.js";

const IGNORE = "";
const DELIMITERS = { ",": ", (comma)", ";": "; (semicolon)", "\t": "tab", "|": "| (pipe)" };

/**
 * The column_map the selects ask for: each column sent to a field, except those the
 * name rule already sends there (the map then holds only what the person chose).
 * A column matched by name cannot be ignored through column_map; the next preview
 * shows it mapped again, so the selects never claim more than the API does.
 */
export function chosenMap(section, preview) {
  const map = {};
  if (!preview) return map;
  $(section, "[data-columns]").querySelectorAll("select").forEach((select, i) => {
    const col = preview.columns[i];
    if (!col || select.value === IGNORE) return;
    if (col.matched_by === "name" && col.field === select.value) return;
    map[col.column] = select.value;
  });
  return map;
}

/** Set the selects to a column_map (the suggested one), keeping the other columns. */
export function applyMap(section, preview, map) {
  $(section, "[data-columns]").querySelectorAll("select").forEach((select, i) => {
    const col = preview.columns[i];
    if (col && map[col.column]) select.value = map[col.column];
  });
}

function cell(tag, text, className) {
  const el = document.createElement(tag);
  el.textContent = text;
  if (className) el.className = className;
  return el;
}

function fieldSelect(preview, col, index) {
  const select = document.createElement("select");
  select.id = `map-${index}`;
  select.append(new Option("ignore", IGNORE));
  for (const f of preview.fields) {
    select.append(new Option(f.required ? `${f.name} (required)` : f.name, f.name));
  }
  select.value = col.field || IGNORE;
  const label = cell("label", `Field for ${col.column}`, "sr");
  label.htmlFor = select.id;
  return [label, select];
}

function columnRow(preview, col, index) {
  const tr = document.createElement("tr");
  const th = cell("th", col.column);
  th.scope = "row";
  const td = document.createElement("td");
  td.append(...fieldSelect(preview, col, index));
  tr.append(th, td, cell("td", col.matched_by ? col.matched_by.replace("_", " ") : "–"));
  return tr;
}

function describeErrors(errors) {
  return errors.map((e) => `${e.field ? `${e.field}: ` : ""}${e.code} (${e.message})`).join("; ");
}

function values(original) {
  if (original === null || typeof original !== "object") return JSON.stringify(original);
  return Object.entries(original).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(", ");
}

/** Show a preview answer; the selects are rebuilt from it (the API's word on the mapping). */
export function renderPreview(section, preview) {
  section.hidden = false;
  const delimiter = preview.delimiter === null ? "–" : DELIMITERS[preview.delimiter] || preview.delimiter;
  counters($(section, "[data-detected]"), [
    ["Format", preview.format],
    ["Delimiter", delimiter],
    ["Encoding", preview.encoding + (preview.encoding_from_bom ? " (byte-order mark)" : "")],
    ["Records shown", `${preview.records.length}${preview.end_of_file ? " (whole file)" : ""}`],
  ]);
  const missing = $(section, "[data-missing]");
  missing.hidden = preview.missing_required_fields.length === 0;
  missing.textContent = missing.hidden ? "" : `Required fields no column feeds: ${
    preview.missing_required_fields.join(", ")}. Choose a column for each, or the import is refused.`;
  const suggested = Object.entries(preview.suggested_column_map);
  $(section, "[data-suggest-box]").hidden = suggested.length === 0;
  $(section, "[data-suggest-text]").textContent = `Suggested: ${
    suggested.map(([c, f]) => `${c} → ${f}`).join(", ")}`;

  const body = $(section, "[data-columns]");
  const key = JSON.stringify([preview.resource, preview.columns.map((c) => c.column)]);
  if (body.dataset.key === key) {
    // The same columns: update in place, so the select just changed keeps the focus.
    preview.columns.forEach((col, i) => {
      body.rows[i].querySelector("select").value = col.field || IGNORE;
      body.rows[i].cells[2].textContent = col.matched_by ? col.matched_by.replace("_", " ") : "–";
    });
  } else {
    body.dataset.key = key;
    body.replaceChildren(...preview.columns.map((col, i) => columnRow(preview, col, i)));
  }

  $(section, "[data-records]").replaceChildren(...preview.records.map((r) => {
    const tr = document.createElement("tr");
    tr.className = r.valid ? "valid" : "invalid";
    tr.append(cell("td", String(r.row), "num"),
      cell("td", r.valid ? "valid" : describeErrors(r.errors), r.valid ? "ok" : "bad"),
      cell("td", values(r.original), "value"));
    return tr;
  }));
}
