// The page's only door to clipd: same-origin calls to /api/v1/, errors turned into ApiError.
// The session cookie rides along on every request (same origin), so no token lives in JavaScript.

const BASE = "/api/v1";

/** An answer that is not what was asked for; `kind` follows the API's error kinds, plus
 * "unreachable" when the daemon could not be reached at all. */
export class ApiError extends Error {
  constructor(kind, message, status = 0, retryAfter = 0) {
    super(message);
    this.kind = kind;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

async function call(path, init = {}) {
  let response;
  try {
    response = await fetch(BASE + path, { credentials: "same-origin", ...init });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("unreachable", "clipd is not answering. Is `clipd serve` still running?");
  }
  if (response.ok) return response;
  let kind = "internal";
  let message = `clipd answered ${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      kind = body.error.kind || kind;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON (a proxy, a crash page): keep the status line as the message.
  }
  const retryAfter = Number(response.headers.get("Retry-After")) || 0;
  throw new ApiError(kind, message, response.status, retryAfter);
}

// The answering daemon's machine (a search answer's `host`): hits of other hosts are files on
// other machines of a shared index, named host:path and drawn from the picture kept there.
let localHost = "";

async function json(path, init) {
  const answer = await (await call(path, init)).json();
  if (typeof answer?.host === "string" && answer.host) localHost = answer.host;
  return answer;
}

function elsewhere(hit) {
  return Boolean(hit.host && localHost && hit.host !== localHost);
}

/** A hit's name for people and for "like": host:path when the file is on another machine. */
export function hitName(hit) {
  return elsewhere(hit) ? `${hit.host}:${hit.path}` : hit.path;
}

function pictureParams(hit, extra) {
  const params = { path: hit.path, ...extra, v: String(hit.mtime) };
  if (elsewhere(hit)) params.host = hit.host;
  return new URLSearchParams(params);
}

/** Puts the filter fields of a search (see app.js's `filters`) on URLSearchParams or FormData. */
function addFilters(target, filters) {
  for (const folder of filters.under) target.append("under", folder);
  if (filters.ext.length) target.append("ext", filters.ext.join(","));
  if (filters.after !== null) target.append("after", String(filters.after));
  if (filters.before !== null) target.append("before", String(filters.before));
  if (filters.minScore > 0) target.append("min_score", String(filters.minScore));
}

/** One page of hits for text and "more like this" terms. */
export function searchText({ q, like, filters, limit, offset, signal }) {
  const params = new URLSearchParams();
  if (q) params.set("q", q);
  for (const path of like) params.append("like", path);
  addFilters(params, filters);
  params.set("limit", String(limit));
  params.set("offset", String(offset));
  return json(`/search?${params}`, { signal });
}

/** One page of hits for an image given as bytes (sent, never stored), plus optional text. */
export function searchImage({ image, q, filters, limit, offset, signal }) {
  const form = new FormData();
  form.append("image", image, image.name || "pasted-image");
  if (q) form.append("q", q);
  addFilters(form, filters);
  form.append("limit", String(limit));
  form.append("offset", String(offset));
  return json("/search", { method: "POST", body: form, signal });
}

export function status() {
  return json("/status");
}

export function failures(limit, offset) {
  return json(`/failures?limit=${limit}&offset=${offset}`);
}

/** One page of groups of near-identical pictures (the duplicates view, duplicates.js). */
export function duplicates({ threshold, tier, under, limit, offset, signal }) {
  const params = new URLSearchParams({ threshold: String(threshold), tier });
  if (under) params.append("under", under);
  params.set("limit", String(limit));
  params.set("offset", String(offset));
  return json(`/duplicates?${params}`, { signal });
}

export function upload(files) {
  const form = new FormData();
  for (const file of files) form.append("file", file, file.name);
  return json("/upload", { method: "POST", body: form });
}

/** Live status: calls onStatus with every status object the server pushes, onLost when the
 * stream breaks (EventSource then reconnects by itself). Returns the EventSource. */
export function watchStatus(onStatus, onLost) {
  const source = new EventSource(`${BASE}/status/events`);
  source.addEventListener("status", (event) => onStatus(JSON.parse(event.data)));
  source.addEventListener("error", () => onLost(source));
  return source;
}

// A hit's mtime names the file's version, so the browser may keep its pictures for good
// (the server answers a versioned URL with "immutable"); a changed file gets a new URL.
export function thumbnailURL(hit, size) {
  return `${BASE}/thumbnail?${pictureParams(hit, { size: String(size) })}`;
}

export function imageURL(hit) {
  return `${BASE}/image?${pictureParams(hit, {})}`;
}
