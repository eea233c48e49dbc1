// Talking to /v1: the API key of this tab, JSON requests, uploads with progress, downloads.
// Every request carries "Authorization: Bearer <key>" when a key is set; downloads are
// fetched and saved from a blob, because a plain link cannot send that header.

const KEY = "bulkport.apiKey";
const problemListeners = [];

export const auth = {
  get key() { return sessionStorage.getItem(KEY) || ""; },
  set(key) {
    if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
  },
};

/** Called with an ApiError for 401, 403 and 429 answers (the console shows the key form). */
export function onAuthProblem(fn) { problemListeners.push(fn); }

export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super(describe(status, body, retryAfter));
    this.status = status;
    this.body = body;
  }
}

function describe(status, body, retryAfter) {
  const detail = body && body.message ? body.message : "";
  if (status === 401) return "This server needs an API key (401 unauthorized). Enter one below.";
  if (status === 403) return `The API key was refused (403 forbidden): ${detail || "check the key"}.`;
  if (status === 429) {
    const wait = retryAfter ? ` Retry in ${retryAfter} s.` : "";
    return `Too many requests (429 rate limited).${wait}`;
  }
  if (status === 0) return "The server could not be reached.";
  return detail ? `${detail} (${status})` : `The server answered ${status}.`;
}

function raise(status, body, retryAfter) {
  const err = new ApiError(status, body, retryAfter);
  if (status === 401 || status === 403 || status === 429) problemListeners.forEach((f) => f(err));
  return err;
}

function authHeaders(extra = {}) {
  const headers = { ...extra };
  if (auth.key) headers.Authorization = `Bearer ${auth.key}`;
  return headers;
}

async function failure(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  return raise(response.status, body, response.headers.get("Retry-After"));
}

/** A JSON request to the API; throws ApiError on any non-2xx answer. */
export async function api(path, { method = "GET", json } = {}) {
  const init = { method, headers: authHeaders() };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try { response = await fetch(path, init); } catch { throw raise(0, null, null); }
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** POST a multipart form with fetch (no progress; can be aborted); throws ApiError. */
export async function postForm(path, formData, signal) {
  let response;
  try {
    response = await fetch(path, { method: "POST", headers: authHeaders(), body: formData, signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw raise(0, null, null);
  }
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** Upload a multipart form with XMLHttpRequest, for its upload progress events. */
export function upload(path, formData, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (e) => onProgress(e.loaded, e.total));
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
      else reject(raise(xhr.status, xhr.response, xhr.getResponseHeader("Retry-After")));
    });
    xhr.addEventListener("error", () => reject(raise(0, null, null)));
    xhr.send(formData);
  });
}

function fileName(disposition, fallback) {
  const match = /filename="?([^";]+)"?/i.exec(disposition || "");
  return match ? match[1] : fallback;
}

/** Fetch a file (with the key) and hand it to the browser as a download; returns its size. */
export async function download(path, fallbackName) {
  let response;
  try { response = await fetch(path, { headers: authHeaders() }); } catch { throw raise(0, null, null); }
  if (!response.ok) throw await failure(response);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = fileName(response.headers.get("Content-Disposition"), fallbackName);
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return blob.size;
}
