// imgsearch web page: a picture, words or a post in; a grid of hits out.
//
// The search lives in the address (?q=words, ?like=uuid, ?picture=1 and the options mode, k,
// caption, fold, min), so Back/Forward, reload and a shared link repeat it. A picked picture
// is held in this tab's memory only: the address says that a picture was used, never which;
// it leaves the page only in the POST of its own search (with the words, if any).
"use strict";

const $ = (id) => document.getElementById(id);
const results = $("results");
const DEFAULT_K = "20";
const DEFAULT_MODE = "hybrid";
const MODES = ["semantic", "keyword", "hybrid"];
const FOLD_THRESHOLD = "0.97";
const MAX_K = 100;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let held = null;       // {file, name}: the picked picture, in memory only
let heldUrl = null;    // its object URL for the preview
let shown = null;      // {search, body, hits, seen, nextOffset}: what the grid shows
let inFlight = null;   // AbortController of the request being answered
let generation = 0;    // answers to superseded requests are dropped
let known = null;      // {uuid, url}: a clicked hit's image link (signed when keys are on)

// -- the search and the address -----------------------------------------------------------

function currentOptions() {
  return { k: $("k").value, caption: $("caption").value.trim(), fold: $("collapse").checked,
           mode: document.querySelector("input[name=mode]:checked").value,
           min: minScore($("min").value) };
}

/** A similarity cutoff as the API takes it ("" when none or not a number in [-1, 1]). */
function minScore(value) {
  const number = Number.parseFloat(value);
  return Number.isFinite(number) && number >= -1 && number <= 1 ? String(number) : "";
}

function toQuery(search) {
  const params = new URLSearchParams();
  if (search.kind === "similar") params.set("like", search.uuid);
  if (search.kind === "picture") params.set("picture", "1"); // a marker, never the picture
  if (search.text && ["text", "picture"].includes(search.kind)) params.set("q", search.text);
  if (search.mode !== DEFAULT_MODE) params.set("mode", search.mode);
  if (search.k !== DEFAULT_K) params.set("k", search.k);
  if (search.caption) params.set("caption", search.caption);
  if (search.fold) params.set("fold", "1");
  if (search.min) params.set("min", search.min);
  const query = params.toString();
  return query ? `?${query}` : location.pathname;
}

function fromQuery(query) {
  const params = new URLSearchParams(query);
  const k = Number.parseInt(params.get("k"), 10);
  const search = {
    kind: null,
    k: Number.isInteger(k) && k >= 1 && k <= MAX_K ? String(k) : DEFAULT_K,
    caption: (params.get("caption") || "").trim().slice(0, 200),
    fold: params.get("fold") === "1",
    mode: MODES.includes(params.get("mode")) ? params.get("mode") : DEFAULT_MODE,
    min: minScore(params.get("min")),
  };
  const text = (params.get("q") || "").trim().slice(0, 500);
  if (params.get("picture") === "1") return { ...search, kind: "picture", text };
  if (text) return { ...search, kind: "text", text };
  if (params.has("like")) return { ...search, kind: "similar", uuid: params.get("like") };
  return search;
}

function showControls(search) {
  const select = $("k");
  if (![...select.options].some((o) => o.value === search.k)) {
    select.append(new Option(search.k)); // a k from a shared link that the list lacks
  }
  select.value = search.k;
  $("caption").value = search.caption;
  $("collapse").checked = search.fold;
  $("min").value = search.min;
  document.querySelector(`input[name=mode][value=${search.mode}]`).checked = true;
  $("text").value = ["text", "picture"].includes(search.kind) ? search.text : "";
}

/** Start ``search`` as a new step of the history (Back returns to the one before). */
function go(search) {
  const address = toQuery(search);
  if (address !== location.search && !(address === location.pathname && !location.search)) {
    history.pushState(null, "", address);
  }
  showControls(search);
  run(search);
}

// -- talking to the API -------------------------------------------------------------------

// authorizedFetch (auth.js) sends the API key and asks for one when the API answers 401.
function request(search, offset, signal) {
  const params = new URLSearchParams({ k: search.k });
  if (search.caption) params.set("caption", search.caption);
  if (search.fold) params.set("collapse", FOLD_THRESHOLD);
  if (offset) params.set("offset", String(offset));
  if (search.min) params.set("min_score", search.min);
  if (search.kind === "text") {
    params.set("text", search.text);
    params.set("mode", search.mode);
    return authorizedFetch(`/search?${params}`, { signal });
  }
  if (search.kind === "similar") {
    return authorizedFetch(`/images/${encodeURIComponent(search.uuid)}/similar?${params}`, { signal });
  }
  const form = new FormData();
  form.append("image", held.file, held.name);
  if (search.text) form.append("text", search.text); // picture + words: hybrid
  return authorizedFetch(`/search?${params}`, { method: "POST", body: form, signal });
}

async function answer(response) {
  const body = await response.json().catch(() => ({ message: response.statusText }));
  if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
  return body;
}

function label(search) {
  if (search.kind === "text") return `“${search.text}”`;
  if (search.kind === "similar") return "More like this post";
  const picture = `Pictures like ${held ? held.name : "your picture"}`;
  return search.text ? `${picture} with the words “${search.text}”` : picture;
}

/** The label with how the answer was ranked, e.g. "“red” · keyword: 12 results". */
function answered(search, body, count) {
  return `${label(search)} · ${body.mode}: ${count} results`;
}

function setBusy(busy) {
  document.body.dataset.state = busy ? "loading" : "done";
  results.setAttribute("aria-busy", String(busy));
}

function begin() {
  if (inFlight) inFlight.abort();
  inFlight = new AbortController();
  generation += 1;
  return { signal: inFlight.signal, ticket: generation };
}

async function run(search) {
  showError("");
  showNotice("");
  showQuery(search);
  if (!search.kind) {
    clearResults();
    $("query-label").textContent = "";
    setBusy(false);
    return;
  }
  if (search.kind === "picture" && !held) {
    clearResults();
    $("query-label").textContent = "";
    showNotice("This search was made with a picture from your device. Pictures are never " +
               "stored or put in the address: pick it again to repeat the search.");
    setBusy(false);
    return;
  }
  if (search.kind === "similar" && !UUID.test(search.uuid)) {
    clearResults();
    showError("The address names no valid post (like=…).");
    setBusy(false);
    return;
  }
  const { signal, ticket } = begin();
  $("query-label").textContent = `${label(search)} …`;
  setBusy(true);
  try {
    const body = await answer(await request(search, 0, signal));
    if (ticket !== generation) return;
    shown = { search, body, hits: [], seen: new Set(), nextOffset: null };
    results.replaceChildren();
    addPage(body);
    if (!body.hits.length) results.append(empty(search));
    showNotice(body.note ? `Note: ${body.note}.` : "");
    const stages = Object.entries(body.timings_ms).map(([k, v]) => `${k} ${v.toFixed(1)} ms`);
    $("query-label").textContent = `${answered(search, body, body.hits.length)} (${stages.join(", ")})`;
  } catch (error) {
    if (ticket !== generation) return;
    $("query-label").textContent = label(search);
    showError(error.message);
    clearResults();
    if (search.kind === "picture") forgetPicture(); // a rejected file: no preview, no re-runs
  } finally {
    if (ticket === generation) setBusy(false);
  }
}

async function more() {
  if (!shown || shown.nextOffset === null) return;
  const { search } = shown;
  const { signal, ticket } = begin();
  const button = $("more");
  button.disabled = true;
  button.textContent = "Loading…";
  setBusy(true);
  try {
    const body = await answer(await request(search, shown.nextOffset, signal));
    if (ticket !== generation) return;
    addPage(body);
    $("query-label").textContent = answered(search, body, shown.hits.length);
  } catch (error) {
    if (ticket === generation) showError(error.message);
  } finally {
    button.disabled = false;
    button.textContent = "More results";
    if (ticket === generation) setBusy(false);
  }
}

// -- results ------------------------------------------------------------------------------

function empty(search) {
  const note = document.createElement("p");
  note.className = "empty";
  const hints = [search.caption && "fewer caption words", search.min && "a lower min similarity"];
  const hint = hints.filter(Boolean).join(" or ");
  note.textContent = hint ? `No results (try ${hint}).` : "No results.";
  return note;
}

function addPage(body) {
  // A deeper search explores further, so a hit can move across a page boundary: skip repeats.
  const fresh = body.hits.filter((hit) => !shown.seen.has(hit.uuid));
  fresh.forEach((hit) => shown.seen.add(hit.uuid));
  const first = shown.hits.length;
  shown.hits.push(...fresh);
  shown.nextOffset = body.next_offset ?? null;
  results.append(...fresh.map((hit, i) => card(hit, `#${first + i + 1}`)));
  $("more").hidden = shown.nextOffset === null;
  $("tools").hidden = shown.hits.length === 0;
}

function clearResults() {
  shown = null;
  results.replaceChildren();
  $("more").hidden = true;
  $("tools").hidden = true;
}

function thumbnail(hit) {
  const image = document.createElement("img");
  image.alt = hit.caption || `post ${hit.uuid}`;
  image.loading = "lazy";
  image.addEventListener("error", () => {
    const missing = document.createElement("div");
    missing.className = "missing";
    missing.textContent = "image unavailable";
    image.replaceWith(missing);
  }, { once: true });
  image.src = hit.image_url;
  return image;
}

function card(hit, rank, groupOf = null) {
  const item = document.createElement("article");
  item.className = groupOf ? "hit folded-hit" : "hit";
  item.dataset.uuid = hit.uuid;
  if (groupOf) item.dataset.foldedInto = groupOf;

  const open = document.createElement("a");
  open.className = "open";
  open.href = toQuery({ ...shown.search, kind: "similar", uuid: hit.uuid });
  open.title = "More like this";
  const meta = document.createElement("div");
  meta.className = "meta";
  const score = document.createElement("div");
  score.className = "score";
  const number = document.createElement("span");
  number.className = "rank";
  number.textContent = rank;
  score.append(number, scoreOf(hit), foundBy(hit));
  meta.append(score, caption(hit));
  open.append(thumbnail(hit), meta);
  open.addEventListener("click", (event) => {
    if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    window.scrollTo({ top: 0, behavior: "smooth" });
    known = { uuid: hit.uuid, url: hit.image_url };
    go({ ...shown.search, kind: "similar", uuid: hit.uuid });
  });
  item.append(open);
  if (hit.folded && hit.folded.length) item.append(foldButton(item, hit));
  return item;
}

/** The cosine when a vector was compared; the caption's BM25 otherwise (keyword mode). */
function scoreOf(hit) {
  const value = document.createElement("span");
  value.className = "value";
  if (hit.score !== null && hit.score !== undefined) {
    value.textContent = hit.score.toFixed(3);
    value.title = "cosine similarity to the query";
  } else if (hit.keyword_score !== null && hit.keyword_score !== undefined) {
    value.textContent = `BM25 ${hit.keyword_score.toFixed(2)}`;
    value.title = "BM25 score of the caption for the words";
  } else {
    value.textContent = "–";
  }
  return value;
}

const FOUND_BY = { picture: "its picture is close to the query",
                   words: "its caption holds the words", both: "its picture and its caption" };

function foundBy(hit) {
  const badge = document.createElement("span");
  const by = hit.found_by || "picture";
  badge.className = `found found-${by}`;
  badge.textContent = by;
  badge.title = `Found by ${FOUND_BY[by] || by}`;
  return badge;
}

/** The caption, its matched words in <mark>: built from text nodes, never parsed as HTML. */
function caption(hit) {
  const text = document.createElement("div");
  text.className = "caption";
  if (!hit.highlight || !hit.highlight.length) {
    text.textContent = hit.caption || "";
    return text;
  }
  text.append(...hit.highlight.map((segment) => {
    if (!segment.mark) return document.createTextNode(segment.text);
    const mark = document.createElement("mark");
    mark.textContent = segment.text;
    return mark;
  }));
  return text;
}

function foldButton(item, hit) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "fold";
  const count = hit.folded.length;
  const closed = `+${count} near-identical`;
  button.textContent = closed;
  button.setAttribute("aria-expanded", "false");
  let members = [];
  button.addEventListener("click", () => {
    if (members.length) {
      members.forEach((member) => member.remove());
      members = [];
      button.textContent = closed;
      button.setAttribute("aria-expanded", "false");
      return;
    }
    members = hit.folded.map((twin) => card(twin, "≈", hit.uuid));
    item.after(...members);
    button.textContent = `Hide ${count} near-identical`;
    button.setAttribute("aria-expanded", "true");
  });
  return button;
}

function download() {
  if (!shown) return;
  const { search, body, hits } = shown;
  const { kind, text, uuid, k, caption, fold, mode, min } = search; // never the picture
  const record = {
    search: { kind, text: text || null, like: uuid, k: Number(k), caption: caption || null,
              collapse: fold ? Number(FOLD_THRESHOLD) : null,
              mode: kind === "text" ? mode : null, min_score: min ? Number(min) : null },
    address: kind === "picture" ? null : location.href,
    // How the API ranked the hits: the mode it used (and why, if not the one asked for).
    mode: body.mode, fusion: body.fusion, min_score: body.min_score, note: body.note,
    model_id: body.model_id, index_version: body.index_version,
    saved_at: new Date().toISOString(), hits,
  };
  const blob = new Blob([JSON.stringify(record, null, 2)], { type: "application/json" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `imgsearch-${kind}-${record.saved_at.slice(0, 19).replaceAll(":", "")}.json`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

// -- the picture, the query box, messages -------------------------------------------------

function showPreview(src) {
  const preview = $("preview");
  preview.hidden = true; // shown once it has loaded: never a broken-image icon
  $("drop-hint").hidden = false;
  if (!src) {
    preview.removeAttribute("src");
    return;
  }
  preview.src = src;
}

function showQuery(search) {
  showPictureInUse(search.kind === "picture" && held !== null);
  if (search.kind === "picture" && held) showPreview(heldUrl);
  else if (search.kind === "similar" && UUID.test(search.uuid)) {
    showPreview(known && known.uuid === search.uuid ? known.url : `/images/${search.uuid}`);
  }
  else showPreview(null);
}

/** While a picture is searched with, words typed are searched with it: the form says so. */
function showPictureInUse(inUse) {
  $("text").placeholder = inUse ? "…plus caption words"
                                : $("text").dataset.placeholder;
  $("text-go").textContent = inUse ? "Search with words" : "Search";
  $("clear-picture").hidden = !inUse;
}

function forgetPicture() {
  if (heldUrl) URL.revokeObjectURL(heldUrl);
  held = heldUrl = null;
  showPreview(null);
  showPictureInUse(false);
}

function pick(file, name) {
  if (!file) return;
  if (heldUrl) URL.revokeObjectURL(heldUrl);
  held = { file, name: name || file.name || "your picture" };
  heldUrl = URL.createObjectURL(file);
  go({ ...currentOptions(), kind: "picture", text: $("text").value.trim() }); // words kept
}

/** Drop the picture: the words typed, if any, are searched on their own. */
function removePicture() {
  forgetPicture();
  const text = $("text").value.trim();
  go(text ? { ...currentOptions(), kind: "text", text } : { ...currentOptions(), kind: null });
  $("text").focus();
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function showNotice(message) {
  $("notice").textContent = message || "";
  $("notice").hidden = !message;
}

async function health() {
  try {
    const response = await fetch("/health");
    const body = await response.json();
    if (!body.index_loaded) {
      $("status").textContent = `index not loaded: ${body.message}`;
      return;
    }
    $("status").textContent =
      `${body.documents.toLocaleString()} images · ${body.model_id} · ${body.backend} · ${body.index_version}`;
    if (!body.text_search) {
      // Words still find captions (keyword search), and a picture's search can take them.
      $("mode").hidden = true;
      $("mode-hint").hidden = false;
      $("text").dataset.placeholder = "…or words from the captions";
      if ($("clear-picture").hidden) $("text").placeholder = $("text").dataset.placeholder;
    }
  } catch (error) {
    $("status").textContent = "API unreachable";
  }
}

// -- wiring -------------------------------------------------------------------------------

const preview = $("preview");
preview.addEventListener("load", () => {
  preview.hidden = false;
  $("drop-hint").hidden = true;
});
preview.addEventListener("error", () => {
  preview.hidden = true;
  $("drop-hint").hidden = false;
});

const drop = $("drop");
const file = $("file");
drop.addEventListener("click", () => file.click());
drop.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    file.click();
  }
});
file.addEventListener("change", () => {
  pick(file.files[0]);
  file.value = ""; // picking the same file again searches again
});
["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (event) => {
  event.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  pick(event.dataTransfer.files[0]);
});
document.addEventListener("paste", (event) => {
  const pasted = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
  if (!pasted) return; // text pastes into the boxes as usual
  event.preventDefault();
  pick(pasted, pasted.name && pasted.name !== "image.png" ? pasted.name : "the pasted picture");
});

$("text-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  const withPicture = held !== null && fromQuery(location.search).kind === "picture";
  if (withPicture) go({ ...currentOptions(), kind: "picture", text });
  else if (text) go({ ...currentOptions(), kind: "text", text });
});
$("clear-picture").addEventListener("click", removePicture);

// An option change re-runs what is shown (a held picture included) as a new history step.
function optionsChanged() {
  const next = { ...fromQuery(location.search), ...currentOptions() };
  if (next.kind) go(next);
  else history.replaceState(null, "", toQuery(next));
}
// The mode ranks words alone: other searches only note it in the address.
function modeChanged() {
  const next = { ...fromQuery(location.search), ...currentOptions() };
  if (next.kind === "text") go(next);
  else history.replaceState(null, "", toQuery(next));
}
$("k").addEventListener("change", optionsChanged);
$("collapse").addEventListener("change", optionsChanged);
$("caption").addEventListener("change", optionsChanged);
$("min").addEventListener("change", optionsChanged);
$("mode").addEventListener("change", modeChanged);

$("more").addEventListener("click", more);
$("download").addEventListener("click", download);

window.addEventListener("popstate", () => {
  const search = fromQuery(location.search);
  showControls(search);
  run(search);
});

health();
{
  const search = fromQuery(location.search);
  showControls(search);
  run(search);
}
