// clipd's web page: search as you type, a grid of pictures, a lightbox, filters, live status.
// Plain ES modules, no build step; everything talks to this daemon only (see api.js).

import * as api from "./api.js";
import * as duplicates from "./duplicates.js";
import * as fmt from "./format.js";

const PAGE = 60; // hits per request: the first screenful and then some
const THUMB = 400; // longest side of a tile's thumbnail, in pixels (tiles are ~200 CSS px)
const TYPING_PAUSE_MS = 220; // search as you type, once the typing pauses this long
const SLOW_MS = 150; // only say "Searching…" when an answer takes longer than this
const EXAMPLES = [
  ["a dog on a beach", "plain words"],
  ["sunset -people", "a minus leaves things out"],
  ["2:snow mountains", "2: weighs a part twice"],
];
const EAGER = PAGE; // the first page's thumbnails load at once; later pages' as they near view
// The second page waits for the first page's pictures (at most this long): its answer and its
// tiles' thumbnails would otherwise take turns with them on the browser's six connections.
const FIRST_PICTURES_WAIT_MS = 2000;

const $ = (selector) => document.querySelector(selector);
const el = {
  form: $("#search"),
  q: $("#q"),
  chips: $("#chips"),
  pick: $("#pick-image"),
  imageFile: $("#image-file"),
  state: $("#state"),
  results: $("#results"),
  more: $("#more"),
  filters: $("#filters"),
  filterForm: $("#filter-form"),
  filterSummary: $("#filter-summary"),
  under: $("#f-under"),
  since: $("#f-since"),
  until: $("#f-until"),
  min: $("#f-min"),
  minOut: $("#f-min-out"),
  roots: $("#roots"),
  searchView: $("#search-view"),
  failures: $("#failures"),
  status: $("#status"),
  statusText: $("#status-text"),
  statusBar: $("#status-bar"),
  statusProblem: $("#status-problem"),
  lightbox: $("#lightbox"),
  dropzone: $("#dropzone"),
  addImages: $("#add-images"),
  uploadFiles: $("#upload-files"),
  toasts: $("#toasts"),
};

// ---------------------------------------------------------------------------------------------
// What is being searched. The URL carries all of it but a query image (bytes stay in memory).

/** @returns {{q: string, like: string[], under: string, since: string, until: string,
 *   ext: string[], min: number}} */
function emptyQuery() {
  return { q: "", like: [], under: "", since: "", until: "", ext: [], min: 0 };
}

let query = emptyQuery();
let queryImage = null; // a File/Blob searched by its bytes, or null
const imagesByEntry = new Map(); // history entry key -> File, so Back restores an image query
let daemon = null; // the last status object

function queryFromURL() {
  const params = new URLSearchParams(location.search);
  return {
    q: params.get("q") || "",
    like: params.getAll("like"),
    under: params.get("under") || "",
    since: params.get("since") || "",
    until: params.get("until") || "",
    ext: (params.get("ext") || "").split(",").filter(Boolean),
    min: Number(params.get("min")) || 0,
  };
}

function urlFor(state) {
  const params = new URLSearchParams();
  if (state.q) params.set("q", state.q);
  for (const path of state.like) params.append("like", path);
  if (state.under) params.set("under", state.under);
  if (state.since) params.set("since", state.since);
  if (state.until) params.set("until", state.until);
  if (state.ext.length) params.set("ext", state.ext.join(","));
  if (state.min > 0) params.set("min", String(state.min));
  const search = params.toString();
  return `${location.pathname}${search ? `?${search}` : ""}${location.hash}`;
}

/** Dates typed as YYYY-MM-DD, read as local midnight; `until` includes its whole day. */
function filtersOf(state) {
  const day = (text, plusDays) => {
    if (!text) return null;
    const [y, m, d] = text.split("-").map(Number);
    return Math.floor(new Date(y, m - 1, d + plusDays).getTime() / 1000);
  };
  return {
    under: state.under ? [state.under] : [],
    ext: state.ext,
    after: day(state.since, 0),
    before: day(state.until, 1),
    minScore: state.min,
  };
}

function hasTerms() {
  return Boolean(query.q.trim() || query.like.length || queryImage);
}

// History: typing replaces the entry it made; anything else (Enter, a filter, a tile's
// "more like this", an image) pushes a new one, so Back steps through searches, not keystrokes.
let typingEntry = false;

function remember({ typing }) {
  const key = queryImage ? `image-${Date.now()}` : null;
  if (key) imagesByEntry.set(key, queryImage);
  const url = urlFor(query);
  const replace = typing && typingEntry;
  const entry = { image: key };
  if (replace) history.replaceState(entry, "", url);
  else if (url !== location.pathname + location.search + location.hash || key) {
    history.pushState(entry, "", url);
  }
  typingEntry = typing;
}

window.addEventListener("popstate", (event) => {
  query = queryFromURL();
  const key = event.state && event.state.image;
  queryImage = (key && imagesByEntry.get(key)) || null;
  typingEntry = false;
  showControls();
  showTitle();
  search();
});

// ---------------------------------------------------------------------------------------------
// Searching and paging.

let run = null; // {id, offset, done, busy, controller, hits}
let runs = 0;

function newRun() {
  if (run) run.controller.abort();
  runs += 1;
  run = {
    id: runs,
    offset: 0,
    done: false,
    busy: false,
    nothingIndexed: false,
    controller: new AbortController(),
    hits: [],
    firstPictures: Promise.resolve(),
  };
  return run;
}

async function search() {
  clearTimeout(typingTimer);
  const current = newRun();
  el.results.dataset.run = String(current.id);
  if (!hasTerms()) {
    replaceHits([]);
    current.done = true;
    showIdleState();
    el.results.dataset.shown = String(current.id);
    return;
  }
  const slow = setTimeout(() => {
    if (run === current) {
      el.results.setAttribute("aria-busy", "true");
      say("loading", "Searching…");
    }
  }, SLOW_MS);
  try {
    const answer = await fetchPage(current);
    if (run !== current) return;
    replaceHits(answer.hits);
    current.firstPictures = picturesIn(el.results, FIRST_PICTURES_WAIT_MS);
    afterPage(current, answer);
  } catch (error) {
    if (run === current) failed(current, error);
  } finally {
    clearTimeout(slow);
    if (run === current) {
      el.results.removeAttribute("aria-busy");
      // Which search the grid shows, for the browser tests and the benchmark to wait on.
      el.results.dataset.shown = String(current.id);
    }
  }
}

async function loadMore() {
  const current = run;
  if (!current || current.done || current.busy || !hasTerms()) return;
  current.busy = true;
  el.more.classList.add("loading");
  try {
    await current.firstPictures;
    if (run !== current) return;
    const answer = await fetchPage(current);
    if (run !== current) return;
    appendHits(answer.hits);
    afterPage(current, answer);
  } catch (error) {
    if (run === current) failed(current, error);
  } finally {
    current.busy = false;
    el.more.classList.remove("loading");
  }
}

function fetchPage(current) {
  const common = {
    q: query.q.trim(),
    filters: filtersOf(query),
    limit: PAGE,
    offset: current.offset,
    signal: current.controller.signal,
  };
  if (queryImage) return api.searchImage({ ...common, image: queryImage });
  return rememberedAnswer({ ...common, like: query.like });
}

// Answers to text and "like" searches, kept a little while so that Back, a reload of the same
// query or Enter pressed again shows the grid at once. An answer is reused only while the index
// looks unchanged (same count, idle) and for at most ANSWER_TTL_MS, so edits show up soon.
const ANSWER_TTL_MS = 30_000;
const ANSWERS_KEPT = 40;
const answers = new Map(); // search key -> {answer, stamp, at}

function indexStamp() {
  return daemon && daemon.state === "idle" ? `${daemon.indexed}:${daemon.failed}` : null;
}

async function rememberedAnswer(request) {
  const { signal, ...what } = request;
  const key = JSON.stringify(what);
  const stamp = indexStamp();
  const kept = answers.get(key);
  if (kept && stamp && kept.stamp === stamp && performance.now() - kept.at < ANSWER_TTL_MS) {
    return kept.answer;
  }
  const answer = await api.searchText(request);
  answers.delete(key);
  answers.set(key, { answer, stamp, at: performance.now() });
  if (answers.size > ANSWERS_KEPT) answers.delete(answers.keys().next().value);
  return answer;
}

function afterPage(current, answer) {
  current.offset += answer.hits.length;
  current.done = answer.hits.length < PAGE;
  current.hits.push(...answer.hits);
  describeResults(current, answer);
  // A short first page may not fill the screen: the sentinel is then already in view.
  if (!current.done) requestAnimationFrame(() => checkSentinel());
}

function failed(current, error) {
  if (error.name === "AbortError") return;
  current.done = true;
  if (error.kind === "not_ready") {
    const seconds = Math.max(1, error.retryAfter || 2);
    say(
      "waiting",
      `The model is still loading. Searching again in ${fmt.plural(seconds, "second")}…`,
    );
    setTimeout(() => run === current && search(), seconds * 1000);
  } else if (error.kind === "unauthenticated") {
    say("error", "This page's session has ended. Run `clipq web` in a terminal to open it again.");
  } else if (error.kind === "bad_request" || error.kind === "too_large") {
    say("error", error.message);
  } else {
    say("error", `${error.message}`, { retry: true });
  }
}

// ---------------------------------------------------------------------------------------------
// The state line: one plain sentence about what is going on.

/** Text with `backquoted` commands, as nodes: the commands set as code. Never HTML. */
function withCode(text) {
  return text
    .split("`")
    .map((part, i) =>
      i % 2 ? Object.assign(document.createElement("code"), { textContent: part }) : part,
    );
}

function say(kind, text, { retry = false, html = null } = {}) {
  el.state.className = `state state-${kind}`;
  el.state.replaceChildren(...(html ? [html] : withCode(text)));
  if (retry) {
    const button = document.createElement("button");
    button.className = "button";
    button.type = "button";
    button.textContent = "Try again";
    button.addEventListener("click", () => search());
    el.state.append(" ", button);
  }
}

let shownWelcome = "";

function showIdleState() {
  shownWelcome = daemon
    ? `${daemon.indexed === 0}:${daemon.state === "indexing"}:${daemon.indexed}`
    : "";
  const box = document.createElement("div");
  box.className = "welcome";
  const title = document.createElement("p");
  title.className = "welcome-title";
  const tips = document.createElement("p");
  tips.className = "muted";
  if (daemon && daemon.indexed === 0 && daemon.state !== "indexing") {
    title.textContent = "Nothing is indexed yet.";
    tips.textContent = daemon.roots.length
      ? `clipd watches ${daemon.roots.join(", ")}; pictures put there appear here within seconds.`
      : "Add a folder to roots in clipd's config.yaml, then run `clipq reload`.";
  } else {
    title.textContent = daemon
      ? `Search ${fmt.plural(daemon.indexed, "picture")} by what is in them.`
      : "Search your pictures by what is in them.";
    const examples = document.createElement("p");
    examples.className = "examples";
    for (const [text, note] of EXAMPLES) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "example";
      button.title = note;
      button.textContent = text;
      button.addEventListener("click", () => {
        el.q.value = text;
        query.q = text;
        commit();
      });
      examples.append(button);
    }
    tips.append(
      "Words describe what you want; a minus leaves things out; 2: weighs a part more. ",
      "Drop, paste or pick an image to find ones like it. Press ",
      Object.assign(document.createElement("kbd"), { textContent: "/" }),
      " to search from anywhere.",
    );
    box.append(title, examples, tips);
    say("empty", "", { html: box });
    return;
  }
  box.append(title, tips);
  say("empty", "", { html: box });
}

function describeResults(current, answer) {
  current.nothingIndexed = Boolean(answer.nothing_indexed);
  if (answer.nothing_indexed) {
    say(
      "nothing",
      daemon && daemon.state === "indexing"
        ? "clipd is reading your pictures for the first time; none is searchable yet. " +
            "This search runs again by itself as soon as some are."
        : "Nothing is indexed yet, so there is nothing to search. " +
            "Add pictures to a watched folder; they show up here as soon as they are read.",
    );
    return;
  }
  const shown = current.hits.length;
  if (shown === 0) {
    const narrowed = query.min > 0 || query.under || query.since || query.until || query.ext.length;
    say(
      "none",
      narrowed
        ? "No pictures match with these filters. Loosen them (Filters above) to see more."
        : "No pictures match.",
    );
    return;
  }
  const parts = [`${fmt.number(shown)}${current.done ? "" : "+"} pictures`, `best first`];
  if (answer.took_ms !== undefined) parts.push(`${Math.round(answer.took_ms)} ms`);
  let text = parts.join(" · ");
  if (answer.partial) text += ". The search was cut short, so some matches may be missing.";
  if (daemon && daemon.state === "indexing") {
    text += ` Still indexing (${fmt.number(daemon.queued)} to go): more may match soon.`;
    say("indexing", text);
  } else {
    say("results", text);
  }
}

// ---------------------------------------------------------------------------------------------
// The grid.

function replaceHits(hits) {
  el.results.replaceChildren(...hits.map((hit, i) => tile(hit, i)));
  window.scrollTo({ top: 0 });
}

function appendHits(hits) {
  const start = el.results.children.length;
  el.results.append(...hits.map((hit, i) => tile(hit, start + i)));
}

function tile(hit, index) {
  const name = fmt.fileName(hit.path);
  const li = document.createElement("li");
  li.className = "hit";
  li.dataset.index = String(index);
  li.dataset.path = hit.path;
  const ratio = hit.width > 0 && hit.height > 0 ? hit.width / hit.height : 1;
  li.style.setProperty("--ar", String(Math.min(3, Math.max(0.33, ratio))));

  const open = document.createElement("button");
  open.className = "open";
  open.type = "button";
  open.setAttribute("aria-label", `${name}, score ${fmt.score(hit.score)}: open`);
  if (api.hitName(hit) !== hit.path) open.title = api.hitName(hit); // on another machine
  const img = document.createElement("img");
  img.alt = name;
  // The first page (a screenful or two) loads at once; the rest only as it nears the viewport.
  img.loading = index < EAGER ? "eager" : "lazy";
  img.decoding = "async";
  img.draggable = true;
  if (hit.width > 0 && hit.height > 0) {
    img.width = hit.width;
    img.height = hit.height;
  }
  img.src = api.thumbnailURL(hit, THUMB);
  img.addEventListener("load", () => li.classList.add("loaded"), { once: true });
  img.addEventListener("error", () => li.classList.add("broken"), { once: true });
  open.append(img);

  const meta = document.createElement("div");
  meta.className = "meta";
  const scoreBadge = document.createElement("span");
  scoreBadge.className = "score";
  scoreBadge.title = "Similarity score";
  scoreBadge.textContent = fmt.score(hit.score);
  const more = document.createElement("button");
  more.className = "more-like";
  more.type = "button";
  // The short label is for narrow tiles (see app.css); the aria-label names the picture.
  const wide = Object.assign(document.createElement("span"), {
    className: "wide",
    textContent: "More like this",
  });
  const narrow = Object.assign(document.createElement("span"), {
    className: "narrow",
    textContent: "Similar",
  });
  more.append(wide, narrow);
  more.setAttribute("aria-label", `More like ${name}`);
  meta.append(scoreBadge, more);
  li.append(open, meta);
  if (index > 0) {
    open.tabIndex = -1;
    more.tabIndex = -1;
  } else {
    li.classList.add("current");
  }
  return li;
}

/** Resolves once every picture in `container` has loaded (or failed), or after `limit` ms. */
function picturesIn(container, limit) {
  const pending = [...container.querySelectorAll("img")].filter((image) => !image.complete);
  const loaded = pending.map(
    (image) =>
      new Promise((resolve) => {
        image.addEventListener("load", resolve, { once: true });
        image.addEventListener("error", resolve, { once: true });
      }),
  );
  return Promise.race([
    Promise.all(loaded),
    new Promise((resolve) => setTimeout(resolve, limit)),
  ]);
}

function hitAt(index) {
  return run && run.hits[index];
}

el.results.addEventListener("click", (event) => {
  const li = event.target.closest(".hit");
  if (!li) return;
  const index = Number(li.dataset.index);
  if (event.target.closest(".more-like")) moreLike(api.hitName(hitAt(index)));
  else if (event.target.closest(".open")) openLightbox(index);
});

el.results.addEventListener("focusin", (event) => {
  const li = event.target.closest(".hit");
  if (li && !li.classList.contains("current")) makeCurrent(li);
});

el.results.addEventListener("dragstart", (event) => {
  const li = event.target.closest(".hit");
  if (li)
    event.dataTransfer.setData("application/x-clipd-path", hitAt(Number(li.dataset.index)).path);
});

// Arrow keys move between tiles; Enter or Space opens one (it is a button).
el.results.addEventListener("keydown", (event) => {
  const li = event.target.closest(".hit");
  if (!li || !event.target.classList.contains("open")) return;
  const index = Number(li.dataset.index);
  const moves = {
    ArrowLeft: () => index - 1,
    ArrowRight: () => index + 1,
    ArrowUp: () => verticalNeighbour(li, -1),
    ArrowDown: () => verticalNeighbour(li, 1),
    Home: () => 0,
    End: () => el.results.children.length - 1,
  };
  if (!moves[event.key]) return;
  event.preventDefault();
  focusTile(moves[event.key]());
});

function verticalNeighbour(li, direction) {
  const tiles = [...el.results.children];
  const box = li.getBoundingClientRect();
  const centre = box.left + box.width / 2;
  const rowTops = [...new Set(tiles.map((t) => Math.round(t.getBoundingClientRect().top)))];
  rowTops.sort((a, b) => a - b);
  const row = rowTops.indexOf(Math.round(box.top)) + direction;
  if (row < 0 || row >= rowTops.length) return Number(li.dataset.index);
  const inRow = tiles.filter((t) => Math.round(t.getBoundingClientRect().top) === rowTops[row]);
  const distance = (t) => {
    const b = t.getBoundingClientRect();
    return Math.abs(b.left + b.width / 2 - centre);
  };
  inRow.sort((a, b) => distance(a) - distance(b));
  return Number(inRow[0].dataset.index);
}

/** The grid is one stop for Tab: only the current tile's buttons are in the tab order, and
 * the arrow keys move between tiles (a "roving tabindex"). */
function makeCurrent(li) {
  for (const old of el.results.querySelectorAll(".hit.current")) {
    old.classList.remove("current");
    for (const button of old.querySelectorAll("button")) button.tabIndex = -1;
  }
  li.classList.add("current");
  for (const button of li.querySelectorAll("button")) button.tabIndex = 0;
}

function focusTile(index) {
  const tiles = el.results.children;
  if (!tiles.length) return;
  const clamped = Math.max(0, Math.min(tiles.length - 1, index));
  const button = tiles[clamped].querySelector(".open");
  makeCurrent(tiles[clamped]);
  button.focus();
  button.scrollIntoView({ block: "nearest", behavior: "smooth" });
  if (clamped >= tiles.length - 6) loadMore();
}

// Infinite scroll: a sentinel under the grid asks for the next page well before it shows.
const sentinel = new IntersectionObserver(
  (entries) => {
    if (entries.some((entry) => entry.isIntersecting)) loadMore();
  },
  { rootMargin: "0px 0px 1200px 0px" },
);
sentinel.observe(el.more);

function checkSentinel() {
  const box = el.more.getBoundingClientRect();
  if (box.top < window.innerHeight + 1200) loadMore();
}

// ---------------------------------------------------------------------------------------------
// Query terms: the box, "more like this" paths and a query image, shown as removable chips.

function showControls() {
  el.q.value = query.q;
  el.under.value = query.under;
  el.since.value = query.since;
  el.until.value = query.until;
  for (const box of el.filterForm.querySelectorAll("input[name=ext]")) {
    box.checked = box.value.split(",").every((ext) => query.ext.includes(ext));
  }
  el.min.value = String(query.min);
  showMin();
  showChips();
  showFilterSummary();
}

function showChips() {
  const chips = [];
  for (const path of query.like) {
    chips.push(
      chip(`Like ${fmt.fileName(path)}`, path, () => {
        query.like = query.like.filter((p) => p !== path);
        commit();
      }),
    );
  }
  if (queryImage) {
    const preview = URL.createObjectURL(queryImage);
    const image = chip(queryImage.name ? `Image ${queryImage.name}` : "Pasted image", "", () => {
      queryImage = null;
      commit();
    });
    const thumb = document.createElement("img");
    thumb.src = preview;
    thumb.alt = "";
    thumb.addEventListener("load", () => URL.revokeObjectURL(preview), { once: true });
    image.prepend(thumb);
    chips.push(image);
  }
  el.chips.replaceChildren(...chips);
}

function chip(label, title, onRemove) {
  const span = document.createElement("span");
  span.className = "chip";
  if (title) span.title = title;
  const text = document.createElement("span");
  text.textContent = label;
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "×";
  remove.setAttribute("aria-label", `Remove ${label}`);
  remove.addEventListener("click", onRemove);
  span.append(text, remove);
  return span;
}

/** Run the search for the current query and give it its own history entry. */
function showTitle() {
  const what =
    query.q.trim() || (queryImage ? "an image" : query.like.length ? "more like this" : "");
  document.title = what ? `${what} · clipd` : "clipd";
}

function commit({ typing = false } = {}) {
  showTitle();
  remember({ typing });
  showChips();
  showFilterSummary();
  search();
}

function moreLike(path) {
  closeLightbox();
  query.like = [path];
  query.q = "";
  queryImage = null;
  el.q.value = "";
  commit();
}

function searchByImage(file) {
  if (!file || !file.type.startsWith("image/")) {
    toast(`${file ? file.name || "That" : "That"} is not an image clipd can search by.`, "error");
    return;
  }
  // A new picture starts a new search: the text and "like" terms of the last one go.
  queryImage = file;
  query.like = [];
  query.q = "";
  el.q.value = "";
  commit();
}

let typingTimer = 0;
el.q.addEventListener("input", () => {
  query.q = el.q.value;
  clearTimeout(typingTimer);
  typingTimer = setTimeout(() => commit({ typing: true }), TYPING_PAUSE_MS);
});

el.form.addEventListener("submit", (event) => {
  event.preventDefault();
  query.q = el.q.value;
  commit();
});

el.q.addEventListener("keydown", (event) => {
  // Backspace in an empty box removes the last chip, as in any token field.
  if (event.key === "Backspace" && !el.q.value && (queryImage || query.like.length)) {
    if (queryImage) queryImage = null;
    else query.like = query.like.slice(0, -1);
    commit();
  } else if (event.key === "ArrowDown" && el.results.children.length) {
    event.preventDefault();
    focusTile(0);
  }
});

el.pick.addEventListener("click", () => el.imageFile.click());
el.imageFile.addEventListener("change", () => {
  const [file] = el.imageFile.files;
  el.imageFile.value = "";
  if (file) searchByImage(file);
});

// ---------------------------------------------------------------------------------------------
// Filters.

function showMin() {
  el.minOut.textContent = query.min > 0 ? fmt.score(query.min) : "off";
}

function showFilterSummary() {
  const parts = [];
  if (query.under) parts.push(`in ${query.under}`);
  if (query.since) parts.push(`since ${query.since}`);
  if (query.until) parts.push(`until ${query.until}`);
  if (query.ext.length) {
    const checked = el.filterForm.querySelectorAll("input[name=ext]:checked");
    parts.push([...checked].map((box) => box.parentElement.textContent.trim()).join(", "));
  }
  if (query.min > 0) parts.push(`score ≥ ${fmt.score(query.min)}`);
  el.filterSummary.textContent = parts.join(" · ");
}

let filterTimer = 0;
function readFilters() {
  query.under = el.under.value.trim();
  query.since = el.since.value;
  query.until = el.until.value;
  const boxes = el.filterForm.querySelectorAll("input[name=ext]:checked");
  query.ext = [...boxes].flatMap((box) => box.value.split(","));
  query.min = Number(el.min.value) || 0;
  showMin();
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => commit(), 250);
}

el.filterForm.addEventListener("input", readFilters);
el.filterForm.addEventListener("change", readFilters);
el.filterForm.addEventListener("submit", (event) => event.preventDefault());
$("#f-clear").addEventListener("click", () => {
  Object.assign(query, { under: "", since: "", until: "", ext: [], min: 0 });
  showControls();
  commit();
});

// ---------------------------------------------------------------------------------------------
// The lightbox.

let shownIndex = -1;
const lb = {
  image: $("#lb-image"),
  name: $("#lb-name"),
  score: $("#lb-score"),
  dims: $("#lb-dims"),
  size: $("#lb-size"),
  date: $("#lb-date"),
  path: $("#lb-path"),
  open: $("#lb-open"),
};

function openLightbox(index) {
  const hit = hitAt(index);
  if (!hit) return;
  shownIndex = index;
  const name = fmt.fileName(hit.path);
  // The thumbnail is cached already: show it at once, then the full picture when it is here.
  lb.image.src = api.thumbnailURL(hit, THUMB);
  lb.image.alt = name;
  const full = new Image();
  full.addEventListener("load", () => shownIndex === index && (lb.image.src = full.src), {
    once: true,
  });
  full.src = api.imageURL(hit);
  lb.name.textContent = name;
  lb.score.textContent = fmt.score(hit.score);
  lb.dims.textContent = hit.width ? `${hit.width} × ${hit.height} pixels` : "unknown";
  lb.size.textContent = fmt.bytes(hit.size_bytes);
  lb.date.textContent = fmt.date(fmt.pictureTime(hit));
  lb.path.textContent = api.hitName(hit);
  lb.open.href = api.imageURL(hit);
  $(".lb-prev").disabled = index === 0;
  $(".lb-next").disabled = index >= run.hits.length - 1 && run.done;
  if (!el.lightbox.open) {
    el.lightbox.showModal();
    el.lightbox.focus();
  }
  if (index >= run.hits.length - 3) loadMore();
}

function closeLightbox() {
  if (!el.lightbox.open) return;
  el.lightbox.close();
}

el.lightbox.addEventListener("close", () => {
  if (shownIndex >= 0) focusTile(shownIndex);
  shownIndex = -1;
});

function step(delta) {
  const next = shownIndex + delta;
  if (next >= 0 && next < run.hits.length) openLightbox(next);
}

el.lightbox.addEventListener("keydown", (event) => {
  if (event.key === "ArrowLeft") step(-1);
  else if (event.key === "ArrowRight") step(1);
  else if (event.key === "Enter" && !event.target.closest("button, a")) {
    window.open(lb.open.href, "_blank", "noopener");
  } else return;
  event.preventDefault();
});

// A click on the backdrop (outside the picture and the panel) closes, as people expect.
el.lightbox.addEventListener("click", (event) => {
  if (event.target === el.lightbox || event.target.classList.contains("lb-stage")) closeLightbox();
});
for (const button of el.lightbox.querySelectorAll(".lb-nav")) {
  button.addEventListener("click", () => step(Number(button.dataset.step)));
}
$(".lb-close").addEventListener("click", closeLightbox);
$("#lb-more").addEventListener("click", () => moreLike(hitAt(shownIndex).path));
$("#lb-copy").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(lb.path.textContent);
    toast("Path copied.");
  } catch {
    toast("The browser did not allow copying; select the path and copy it.", "error");
  }
});

// ---------------------------------------------------------------------------------------------
// Keys that work everywhere: "/" focuses the search box, Esc clears it.

document.addEventListener("keydown", (event) => {
  const typing = event.target.closest("input, textarea, select, [contenteditable]");
  if (event.key === "/" && !typing && !el.lightbox.open) {
    event.preventDefault();
    showView("search");
    el.q.focus();
    el.q.select();
  } else if (event.key === "Escape" && event.target === el.q && el.q.value) {
    event.preventDefault();
    el.q.value = "";
    query.q = "";
    commit();
  }
});

// ---------------------------------------------------------------------------------------------
// Images in: drop, paste, or pick. Dropped on "Add to your pictures", files are uploaded.

let dragDepth = 0;

function draggingFiles(event) {
  const types = event.dataTransfer ? [...event.dataTransfer.types] : [];
  return types.includes("Files") || types.includes("application/x-clipd-path");
}

document.addEventListener("dragenter", (event) => {
  if (!draggingFiles(event)) return;
  dragDepth += 1;
  el.dropzone.hidden = false;
});

document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) el.dropzone.hidden = true;
});

document.addEventListener("dragover", (event) => {
  if (!draggingFiles(event)) return;
  event.preventDefault();
  for (const target of el.dropzone.querySelectorAll(".drop-target")) {
    target.classList.toggle("over", target.contains(event.target));
  }
});

document.addEventListener("drop", (event) => {
  if (!event.dataTransfer) return;
  event.preventDefault();
  dragDepth = 0;
  el.dropzone.hidden = true;
  const path = event.dataTransfer.getData("application/x-clipd-path");
  if (path) {
    moreLike(path);
    return;
  }
  const files = [...event.dataTransfer.files];
  if (!files.length) return;
  const target = event.target.closest && event.target.closest("[data-drop]");
  if (target && target.dataset.drop === "upload" && daemon && daemon.upload_enabled) {
    uploadFiles(files);
  } else {
    searchByImage(files[0]);
  }
});

document.addEventListener("paste", (event) => {
  const items = event.clipboardData ? [...event.clipboardData.items] : [];
  const item = items.find((i) => i.kind === "file" && i.type.startsWith("image/"));
  if (!item) return; // text pastes into the search box as usual
  event.preventDefault();
  searchByImage(item.getAsFile());
});

async function uploadFiles(files) {
  toast(`Adding ${fmt.plural(files.length, "picture")}…`);
  try {
    const answer = await api.upload(files);
    if (answer.saved.length) {
      const added = answer.saved.length;
      toast(
        `Added ${fmt.plural(added, "picture")}; ${added === 1 ? "it appears" : "they appear"} in searches once indexed.`,
      );
    }
    for (const refused of answer.refused) toast(`${refused.name}: ${refused.reason}`, "error");
  } catch (error) {
    toast(`Could not add the pictures: ${error.message}`, "error");
  }
}

el.addImages.addEventListener("click", () => el.uploadFiles.click());
el.uploadFiles.addEventListener("change", () => {
  const files = [...el.uploadFiles.files];
  el.uploadFiles.value = "";
  if (files.length) uploadFiles(files);
});

// ---------------------------------------------------------------------------------------------
// Live status at the bottom: progress, rate, time left, and any problem.

function showStatus(status) {
  daemon = status;
  const s = status;
  const total = s.indexed + s.queued;
  el.status.dataset.state = s.state;
  el.statusBar.hidden = s.state !== "indexing" || total === 0;
  el.statusBar.max = Math.max(1, total);
  el.statusBar.value = s.indexed;
  let text;
  if (s.state === "starting") text = "clipd is starting: loading the model…";
  else if (s.state === "stopping") text = "clipd is stopping.";
  else if (s.state === "indexing") {
    const parts = [`Indexing: ${fmt.number(s.indexed)} of ${fmt.number(total)} pictures`];
    if (s.images_per_second > 0) parts.push(`${s.images_per_second.toFixed(1)} pictures/s`);
    const left = fmt.timeLeft(s.eta_seconds);
    if (left) parts.push(left);
    text = parts.join(" · ");
  } else {
    text = `${fmt.plural(s.indexed, "picture")} indexed`;
    if (s.roots && s.roots.length) text += ` in ${fmt.plural(s.roots.length, "folder")}`;
  }
  el.statusText.replaceChildren(text);
  if (s.failed > 0) {
    const link = document.createElement("a");
    link.href = "#failures";
    link.textContent = `${fmt.plural(s.failed, "file")} could not be read`;
    el.statusText.append(" · ", link);
  }
  el.statusProblem.hidden = !s.problem;
  el.statusProblem.textContent = s.problem ? `Problem: ${s.problem}` : "";
  el.addImages.hidden = !s.upload_enabled;
  el.dropzone.querySelector('[data-drop="upload"]').hidden = !s.upload_enabled;
  if (s.roots) {
    el.roots.replaceChildren(
      ...s.roots.map((root) => Object.assign(document.createElement("option"), { value: root })),
    );
  }
  // The welcome is rebuilt only when what it says changes, so focus on it is not lost.
  const welcome = `${s.indexed === 0}:${s.state === "indexing"}:${s.indexed}`;
  if (!hasTerms() && welcome !== shownWelcome) showIdleState();
  // A search that found an empty index runs again once there is something to find.
  else if (run && run.nothingIndexed && s.indexed > 0) search();
}

// The stream holds one of the six connections a browser keeps to one host: a tab out of view
// gives it back (and takes a new one, which starts with the current status, when it returns),
// so that tabs left open in the background cannot starve the one in view of connections.
let statusStream = null;

function followStatus() {
  if (document.hidden) {
    statusStream?.close();
    statusStream = null;
  } else if (!statusStream) {
    statusStream = api.watchStatus(showStatus, lostStatus);
  }
}

function lostStatus(source) {
  el.status.dataset.state = "lost";
  el.statusText.textContent =
    source.readyState === EventSource.CLOSED
      ? "Lost contact with clipd. Reload the page once it runs again."
      : "Lost contact with clipd; trying again…";
  el.statusBar.hidden = true;
}

// ---------------------------------------------------------------------------------------------
// The failures view (#failures).

const failureRows = { loaded: 0, total: 0 };

async function loadFailures(reset) {
  const body = $("#failures-table tbody");
  if (reset) {
    body.replaceChildren();
    failureRows.loaded = 0;
  }
  try {
    const answer = await api.failures(100, failureRows.loaded);
    failureRows.total = answer.total;
    failureRows.loaded += answer.failures.length;
    body.append(...answer.failures.map(failureRow));
    const summary = $("#failures-summary");
    if (answer.total) {
      const command = Object.assign(document.createElement("code"), {
        textContent: "clipq reindex",
      });
      summary.replaceChildren(
        `${fmt.plural(answer.total, "file")} could not be indexed. clipd tries a file again when it ` +
          "changes; fix or remove these, or run ",
        command,
        " to try them all again.",
      );
    } else {
      summary.textContent = "Every file clipd found was indexed. Nothing failed.";
    }
    $("#failures-table").hidden = answer.total === 0;
    $("#failures-more").hidden = failureRows.loaded >= failureRows.total;
  } catch (error) {
    $("#failures-summary").textContent = `Could not list the failures: ${error.message}`;
  }
}

function failureRow(failure) {
  const row = document.createElement("tr");
  const cells = [
    failure.path,
    failure.message ? `${failure.message}` : failure.error,
    String(failure.attempts),
    fmt.date(failure.last_seen),
  ];
  for (const [i, text] of cells.entries()) {
    const cell = document.createElement(i === 0 ? "th" : "td");
    if (i === 0) cell.scope = "row";
    cell.textContent = text;
    if (i === 1 && failure.error) {
      const kind = document.createElement("span");
      kind.className = "kind";
      kind.textContent = failure.error;
      cell.prepend(kind, " ");
    }
    row.append(cell);
  }
  return row;
}

$("#failures-more").addEventListener("click", () => loadFailures(false));

// The views besides search, by the address's hash.
const VIEWS = { "#failures": "failures", "#duplicates": "duplicates" };

function showView(name) {
  const failures = name === "failures";
  el.failures.hidden = !failures;
  el.searchView.hidden = name !== "search";
  el.filters.hidden = name !== "search";
  duplicates.show(name === "duplicates");
  if (failures) loadFailures(true);
  else if (name === "search" && VIEWS[location.hash])
    history.replaceState(history.state, "", urlFor(query).replace(/#.*$/, ""));
}

window.addEventListener("hashchange", () => showView(VIEWS[location.hash] || "search"));

// ---------------------------------------------------------------------------------------------
// Little notes that come and go.

function toast(text, kind = "info") {
  const note = document.createElement("div");
  note.className = `toast toast-${kind}`;
  note.textContent = text;
  el.toasts.append(note);
  setTimeout(() => note.remove(), kind === "error" ? 8000 : 4000);
}

// ---------------------------------------------------------------------------------------------
// Start.

function start() {
  query = queryFromURL();
  showControls();
  showTitle();
  if (query.under || query.since || query.until || query.ext.length || query.min)
    el.filters.open = true;
  history.replaceState({ image: null }, "", location.href);
  showView(VIEWS[location.hash] || "search");
  followStatus();
  document.addEventListener("visibilitychange", followStatus);
  api.status().then(showStatus, () => {});
  search();
  if (!hasTerms() && !VIEWS[location.hash]) el.q.focus();
}

start();
