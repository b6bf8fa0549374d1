// imgsearch web page: a picture, words or a post in; a grid of hits out.
//
// The search lives in the address (?q=words, ?like=uuid, ?picture=1 and the options k,
// caption, fold), so Back/Forward, reload and a shared link repeat it. A picked picture is
// held in this tab's memory only: the address says that a picture was used, never which.
"use strict";

const $ = (id) => document.getElementById(id);
const results = $("results");
const DEFAULT_K = "20";
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
  return { k: $("k").value, caption: $("caption").value.trim(), fold: $("collapse").checked };
}

function toQuery(search) {
  const params = new URLSearchParams();
  if (search.kind === "text") params.set("q", search.text);
  if (search.kind === "similar") params.set("like", search.uuid);
  if (search.kind === "picture") params.set("picture", "1"); // a marker, never the picture
  if (search.k !== DEFAULT_K) params.set("k", search.k);
  if (search.caption) params.set("caption", search.caption);
  if (search.fold) params.set("fold", "1");
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
  };
  const text = (params.get("q") || "").trim();
  if (text) return { ...search, kind: "text", text: text.slice(0, 500) };
  if (params.has("like")) return { ...search, kind: "similar", uuid: params.get("like") };
  if (params.get("picture") === "1") return { ...search, kind: "picture" };
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
  $("text").value = search.kind === "text" ? search.text : "";
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
  if (search.kind === "text") {
    params.set("text", search.text);
    return authorizedFetch(`/search?${params}`, { signal });
  }
  if (search.kind === "similar") {
    return authorizedFetch(`/images/${encodeURIComponent(search.uuid)}/similar?${params}`, { signal });
  }
  const form = new FormData();
  form.append("image", held.file, held.name);
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
  return `Pictures like ${held ? held.name : "your picture"}`;
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
    if (!body.hits.length) {
      const empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = search.caption ? "No results (try fewer caption words)." : "No results.";
      results.append(empty);
    }
    const stages = Object.entries(body.timings_ms).map(([k, v]) => `${k} ${v.toFixed(1)} ms`);
    $("query-label").textContent = `${label(search)}: ${body.hits.length} results (${stages.join(", ")})`;
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
    $("query-label").textContent = `${label(search)}: ${shown.hits.length} results`;
  } catch (error) {
    if (ticket === generation) showError(error.message);
  } finally {
    button.disabled = false;
    button.textContent = "More results";
    if (ticket === generation) setBusy(false);
  }
}

// -- results ------------------------------------------------------------------------------

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
  score.append(number, hit.score.toFixed(3));
  const caption = document.createElement("div");
  caption.className = "caption";
  caption.textContent = hit.caption || "";
  meta.append(score, caption);
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
  const { kind, text, uuid, k, caption, fold } = search; // a picture never leaves the page
  const record = {
    search: { kind, text, like: uuid, k: Number(k), caption: caption || null,
              collapse: fold ? Number(FOLD_THRESHOLD) : null },
    address: kind === "picture" ? null : location.href,
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
  if (search.kind === "picture" && held) showPreview(heldUrl);
  else if (search.kind === "similar" && UUID.test(search.uuid)) {
    showPreview(known && known.uuid === search.uuid ? known.url : `/images/${search.uuid}`);
  }
  else showPreview(null);
}

function forgetPicture() {
  if (heldUrl) URL.revokeObjectURL(heldUrl);
  held = heldUrl = null;
  showPreview(null);
}

function pick(file, name) {
  if (!file) return;
  if (heldUrl) URL.revokeObjectURL(heldUrl);
  held = { file, name: name || file.name || "your picture" };
  heldUrl = URL.createObjectURL(file);
  go({ ...currentOptions(), kind: "picture" });
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
      $("text").disabled = $("text-go").disabled = true;
      $("text").placeholder = `text search needs a SigLIP index (this one is ${body.model_id})`;
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
  if (text) go({ ...currentOptions(), kind: "text", text });
});

// An option change re-runs what is shown (a held picture included) as a new history step.
function optionsChanged() {
  const next = { ...fromQuery(location.search), ...currentOptions() };
  if (next.kind) go(next);
  else history.replaceState(null, "", toQuery(next));
}
$("k").addEventListener("change", optionsChanged);
$("collapse").addEventListener("change", optionsChanged);
$("caption").addEventListener("change", optionsChanged);

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
