// The duplicates view (/#duplicates): groups of near-identical pictures, each under its tier
// (exact copies, re-encodes, close variants), the file to keep first; a similarity threshold,
// the loosest tier and a folder narrow it; a lightbox shows one picture at a time. It only shows:
// nothing here deletes or moves a file. app.js calls show() when the address says #duplicates;
// everything else about the view lives here, its markup included.

import * as api from "./api.js";
import * as fmt from "./format.js";

const PAGE = 20; // groups per request; "Show more groups" asks for the next ones
const THUMB = 400; // the same thumbnail size as the search grid's, so the browser shares them
const SETTLE_MS = 300; // a threshold being dragged or a folder being typed: ask once it rests
const TIERS = {
  exact: { name: "Exact copies", note: "the same bytes" },
  reencoded: { name: "Re-encoded or resized", note: "the same picture, saved again" },
  variant: { name: "Close variants", note: "bursts, small crops and edits" },
};

const VIEW = `
  <div class="failures-head">
    <h1 id="duplicates-title">Near-identical pictures</h1>
    <a class="button ghost" href="#">Back to search</a>
  </div>
  <p class="muted">
    Copies, re-exports, resized versions and bursts of one picture, grouped; the one to keep comes
    first. clipd only shows them: it never deletes or moves a file.
  </p>
  <form id="dup-form" class="filter-grid" autocomplete="off">
    <label class="min-score">Similarity at least
      <output id="dup-threshold-out" for="dup-threshold"></output>
      <input id="dup-threshold" name="threshold" type="range" min="0.5" max="1" step="0.01"
        value="0.9" aria-describedby="dup-threshold-hint" />
      <span id="dup-threshold-hint" class="dup-hint">lower finds looser variants</span>
    </label>
    <label>Group
      <select id="dup-tier" name="tier">
        <option value="variant">Copies, re-encodes and close variants</option>
        <option value="reencoded">Copies and re-encodes</option>
        <option value="exact">Exact copies only</option>
      </select>
    </label>
    <label>Folder
      <input id="dup-under" name="under" type="text" list="roots" placeholder="any folder"
        spellcheck="false" />
    </label>
  </form>
  <div id="dup-state" class="state" role="status" aria-live="polite"></div>
  <ol id="dup-groups" class="dup-groups" aria-label="Groups of near-identical pictures"></ol>
  <button id="dup-more" class="button" type="button" hidden>Show more groups</button>`;

const DIALOG = `
  <div class="lb-stage">
    <button class="lb-nav lb-prev" type="button" data-step="-1"
      aria-label="Previous picture (left arrow)">‹</button>
    <figure><img id="dup-lb-image" alt="" /></figure>
    <button class="lb-nav lb-next" type="button" data-step="1"
      aria-label="Next picture (right arrow)">›</button>
  </div>
  <aside class="lb-info">
    <button class="icon-button lb-close" type="button" aria-label="Close (Esc)">✕</button>
    <h2 id="dup-lb-name"></h2>
    <p id="dup-lb-where" class="muted"></p>
    <dl>
      <dt>Similarity to the first</dt><dd id="dup-lb-score"></dd>
      <dt>Dimensions</dt><dd id="dup-lb-dims"></dd>
      <dt>Size</dt><dd id="dup-lb-size"></dd>
      <dt>Date</dt><dd id="dup-lb-date"></dd>
      <dt>Path</dt><dd id="dup-lb-path" class="path"></dd>
    </dl>
    <div class="lb-actions">
      <a id="dup-lb-open" class="button" target="_blank" rel="noopener">Open original</a>
      <a id="dup-lb-like" class="button ghost">More like this</a>
      <button id="dup-lb-copy" class="button ghost" type="button">Copy path</button>
    </div>
    <p id="dup-lb-note" class="muted" role="status"></p>
    <p class="muted keys">
      <kbd>←</kbd> <kbd>→</kbd> move · <kbd>Enter</kbd> open original · <kbd>Esc</kbd> close
    </p>
  </aside>`;

let el = null; // the view's elements, once built
// What is listed: every file shown, in order, with its group; and the request in flight.
const listing = { files: [], offset: 0, total: 0, done: true, controller: null, requests: 0 };
let shownFile = -1; // the lightbox's file, an index into listing.files
let settleTimer = 0;

/** Show the view (and list the groups afresh: the index may have changed) or hide it. */
export function show(visible) {
  if (!visible) {
    if (el) {
      el.view.hidden = true;
      if (el.dialog.open) el.dialog.close();
      if (listing.controller) listing.controller.abort();
    }
    return;
  }
  if (!el) build();
  el.view.hidden = false;
  load(true);
}

function build() {
  const view = document.createElement("section");
  view.id = "duplicates";
  view.className = "duplicates";
  view.setAttribute("aria-labelledby", "duplicates-title");
  view.innerHTML = VIEW; // constant markup: no data goes through innerHTML
  document.querySelector("main").append(view);
  const dialog = document.createElement("dialog");
  dialog.id = "dup-lightbox";
  dialog.className = "lightbox";
  dialog.tabIndex = -1;
  dialog.setAttribute("aria-labelledby", "dup-lb-name");
  dialog.innerHTML = DIALOG;
  document.body.append(dialog);
  const $ = (selector) => document.querySelector(selector);
  el = {
    view,
    dialog,
    form: $("#dup-form"),
    threshold: $("#dup-threshold"),
    thresholdOut: $("#dup-threshold-out"),
    tier: $("#dup-tier"),
    under: $("#dup-under"),
    state: $("#dup-state"),
    groups: $("#dup-groups"),
    more: $("#dup-more"),
    lb: {
      image: $("#dup-lb-image"),
      name: $("#dup-lb-name"),
      where: $("#dup-lb-where"),
      score: $("#dup-lb-score"),
      dims: $("#dup-lb-dims"),
      size: $("#dup-lb-size"),
      date: $("#dup-lb-date"),
      path: $("#dup-lb-path"),
      open: $("#dup-lb-open"),
      like: $("#dup-lb-like"),
      note: $("#dup-lb-note"),
      prev: dialog.querySelector(".lb-prev"),
      next: dialog.querySelector(".lb-next"),
    },
  };
  showThreshold();
  listen();
}

// ---------------------------------------------------------------------------------------------
// Asking for groups, a page at a time.

async function load(reset) {
  if (listing.controller) listing.controller.abort();
  const controller = new AbortController();
  listing.controller = controller;
  listing.requests += 1;
  const request = listing.requests;
  if (reset) {
    listing.offset = 0;
    listing.done = false;
  }
  el.groups.setAttribute("aria-busy", "true");
  el.more.disabled = true;
  try {
    const answer = await api.duplicates({
      threshold: Number(el.threshold.value),
      tier: el.tier.value,
      under: el.under.value.trim(),
      limit: PAGE,
      offset: listing.offset,
      signal: controller.signal,
    });
    if (reset) {
      listing.files = [];
      el.groups.replaceChildren();
    }
    const first = listing.offset;
    el.groups.append(...answer.groups.map((group, i) => groupItem(group, first + i)));
    listing.offset += answer.groups.length;
    listing.total = answer.total;
    listing.done = listing.offset >= answer.total;
    describe(answer.unchecked);
  } catch (error) {
    if (error.name === "AbortError") return;
    say("error", error.message, true);
  } finally {
    if (listing.controller === controller) {
      el.groups.removeAttribute("aria-busy");
      el.more.disabled = false;
      el.more.hidden = listing.done;
      // Which request the list shows, for the browser tests to wait on.
      el.groups.dataset.shown = String(request);
    }
  }
}

function describe(unchecked) {
  const parts = [];
  if (listing.total === 0) {
    parts.push(
      Number(el.threshold.value) > 0.5 && el.tier.value === "variant"
        ? "No near-identical pictures here. A lower similarity finds looser variants."
        : "No near-identical pictures here.",
    );
  } else {
    const shown = listing.offset < listing.total ? `${fmt.number(listing.offset)} of ` : "";
    parts.push(`${shown}${fmt.plural(listing.total, "group")}, strictest first.`);
  }
  if (unchecked > 0) {
    parts.push(
      `${fmt.plural(unchecked, "file")} not compared by their pixels yet (clipd does that in ` +
        "the background): until then they show up only as exact copies.",
    );
  }
  say(listing.total ? "results" : "none", parts.join(" "));
}

function say(kind, text, retry = false) {
  el.state.className = `state state-${kind}`;
  el.state.replaceChildren(text);
  if (retry) {
    const button = Object.assign(document.createElement("button"), {
      className: "button",
      type: "button",
      textContent: "Try again",
    });
    button.addEventListener("click", () => load(true));
    el.state.append(" ", button);
  }
}

// ---------------------------------------------------------------------------------------------
// Groups and their tiles.

function groupItem(group, number) {
  const tier = TIERS[group.tier] || { name: group.tier, note: "" };
  const item = document.createElement("li");
  item.className = "dup-group";
  item.dataset.tier = group.tier;
  const heading = document.createElement("h2");
  heading.id = `dup-group-${number}`;
  const badge = Object.assign(document.createElement("span"), {
    className: `tier tier-${group.tier}`,
    textContent: tier.name,
  });
  const spare = group.files.slice(1).reduce((sum, file) => sum + file.size_bytes, 0);
  const facts = [fmt.plural(group.files.length, "file"), tier.note];
  if (spare > 0) facts.push(`${fmt.bytes(spare)} in the others`);
  heading.append(badge, " ", facts.filter(Boolean).join(" · "));
  const grid = document.createElement("ul");
  grid.className = "grid dup-files";
  grid.setAttribute("aria-labelledby", heading.id);
  grid.append(
    ...group.files.map((file, index) => {
      listing.files.push({ file, group, index });
      return tile(file, index, listing.files.length - 1);
    }),
  );
  item.append(heading, grid);
  return item;
}

function tile(file, index, position) {
  const name = fmt.fileName(file.path);
  const li = document.createElement("li");
  li.className = "hit dup-file";
  li.dataset.position = String(position);
  li.dataset.path = file.path;
  const ratio = file.width > 0 && file.height > 0 ? file.width / file.height : 1;
  li.style.setProperty("--ar", String(Math.min(3, Math.max(0.33, ratio))));

  const open = document.createElement("button");
  open.className = "open";
  open.type = "button";
  const keep = index === 0 ? "the one to keep, " : "";
  open.setAttribute(
    "aria-label",
    `${name}, ${keep}${dimensions(file)}, ${fmt.bytes(file.size_bytes)}: open`,
  );
  const img = document.createElement("img");
  img.alt = name;
  img.loading = "lazy";
  img.decoding = "async";
  if (file.width > 0 && file.height > 0) {
    img.width = file.width;
    img.height = file.height;
  }
  img.src = api.thumbnailURL(file, THUMB);
  img.addEventListener("load", () => li.classList.add("loaded"), { once: true });
  img.addEventListener("error", () => li.classList.add("broken"), { once: true });
  open.append(img);

  const meta = document.createElement("div");
  meta.className = "meta";
  const score = Object.assign(document.createElement("span"), {
    className: "score",
    title: "Similarity to the group's first picture",
    textContent: fmt.score(file.score),
  });
  meta.append(score);
  if (index === 0) {
    meta.append(
      Object.assign(document.createElement("span"), { className: "keep", textContent: "Keep" }),
    );
  }
  const caption = document.createElement("p");
  caption.className = "dup-caption";
  caption.title = file.path;
  caption.append(
    Object.assign(document.createElement("span"), {
      className: "dup-name",
      textContent: shortPath(file.path), // copies often share a name: say whose folder
    }),
    `${dimensions(file)} · ${fmt.bytes(file.size_bytes)}`,
  );
  li.append(open, meta, caption);
  return li;
}

/** The file's name with its folder's: "backup/IMG_0412.jpg". */
function shortPath(path) {
  return path.split("/").slice(-2).join("/");
}

function dimensions(file) {
  return file.width ? `${file.width} × ${file.height}` : "size unknown";
}

function focusTile(position) {
  const clamped = Math.max(0, Math.min(listing.files.length - 1, position));
  const button = el.groups.querySelector(`[data-position="${clamped}"] .open`);
  if (!button) return;
  button.focus();
  button.scrollIntoView({ block: "nearest", behavior: "smooth" });
}

// ---------------------------------------------------------------------------------------------
// The lightbox: the look of the search's, its own pictures (every file listed, in order).

function openLightbox(position) {
  const entry = listing.files[position];
  if (!entry) return;
  shownFile = position;
  const { file, group, index } = entry;
  const { lb } = el;
  const name = fmt.fileName(file.path);
  lb.image.src = api.thumbnailURL(file, THUMB); // cached: shown at once, then the original
  lb.image.alt = name;
  const full = new Image();
  full.addEventListener("load", () => shownFile === position && (lb.image.src = full.src), {
    once: true,
  });
  full.src = api.imageURL(file);
  lb.name.textContent = name;
  const tier = TIERS[group.tier] ? TIERS[group.tier].name : group.tier;
  lb.where.textContent = `${tier}: file ${index + 1} of ${group.files.length}${index === 0 ? ", the one to keep" : ""}`;
  lb.score.textContent = fmt.score(file.score);
  lb.dims.textContent = file.width ? `${dimensions(file)} pixels` : "unknown";
  lb.size.textContent = fmt.bytes(file.size_bytes);
  lb.date.textContent = fmt.date(fmt.pictureTime(file));
  lb.path.textContent = file.path;
  lb.open.href = api.imageURL(file);
  lb.like.href = `/?${new URLSearchParams({ like: file.path })}`;
  lb.note.textContent = "";
  lb.prev.disabled = position === 0;
  lb.next.disabled = position >= listing.files.length - 1 && listing.done;
  if (!el.dialog.open) {
    el.dialog.showModal();
    el.dialog.focus();
  }
  if (position >= listing.files.length - 3 && !listing.done) load(false);
}

function step(delta) {
  const next = shownFile + delta;
  if (next >= 0 && next < listing.files.length) openLightbox(next);
}

// ---------------------------------------------------------------------------------------------
// Events.

function showThreshold() {
  el.thresholdOut.textContent = fmt.score(Number(el.threshold.value)).slice(0, 4);
}

function listen() {
  el.form.addEventListener("submit", (event) => event.preventDefault());
  el.form.addEventListener("input", (event) => {
    showThreshold();
    clearTimeout(settleTimer);
    settleTimer = setTimeout(() => load(true), event.target === el.tier ? 0 : SETTLE_MS);
  });
  el.more.addEventListener("click", () => load(false));

  el.groups.addEventListener("click", (event) => {
    const li = event.target.closest(".dup-file");
    if (li && event.target.closest(".open")) openLightbox(Number(li.dataset.position));
  });
  // Left and right walk through every file listed; Home and End go to the first and last.
  el.groups.addEventListener("keydown", (event) => {
    const li = event.target.closest(".dup-file");
    if (!li || !event.target.classList.contains("open")) return;
    const position = Number(li.dataset.position);
    const moves = {
      ArrowLeft: position - 1,
      ArrowRight: position + 1,
      Home: 0,
      End: listing.files.length - 1,
    };
    if (!(event.key in moves)) return;
    event.preventDefault();
    focusTile(moves[event.key]);
  });

  const { dialog } = el;
  dialog.addEventListener("close", () => {
    if (shownFile >= 0) focusTile(shownFile);
    shownFile = -1;
  });
  dialog.addEventListener("keydown", (event) => {
    // The page's own keys ("/" to search) wait until the lightbox is closed.
    event.stopPropagation();
    if (event.key === "ArrowLeft") step(-1);
    else if (event.key === "ArrowRight") step(1);
    else if (event.key === "Enter" && !event.target.closest("button, a")) {
      window.open(el.lb.open.href, "_blank", "noopener");
    } else return;
    event.preventDefault();
  });
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog || event.target.classList.contains("lb-stage")) dialog.close();
  });
  for (const button of dialog.querySelectorAll(".lb-nav")) {
    button.addEventListener("click", () => step(Number(button.dataset.step)));
  }
  dialog.querySelector(".lb-close").addEventListener("click", () => dialog.close());
  dialog.querySelector("#dup-lb-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(el.lb.path.textContent);
      el.lb.note.textContent = "Path copied.";
    } catch {
      el.lb.note.textContent = "The browser did not allow copying; select the path and copy it.";
    }
  });
}
