// imgsearch web page: picture or text in, a grid of hits out; click a hit for more like it.
"use strict";

const $ = (id) => document.getElementById(id);
const results = $("results");
let previewUrl = null;  // object URL of the picked file: it stays in this tab's memory

function options() {
  const params = new URLSearchParams({ k: $("k").value });
  const caption = $("caption").value.trim();
  if (caption) params.set("caption", caption);
  if ($("collapse").checked) params.set("collapse", "0.97");
  return params;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function showPreview(src) {
  if (previewUrl && previewUrl !== src) URL.revokeObjectURL(previewUrl);
  $("preview").src = src;
  $("preview").hidden = false;
  $("drop-hint").hidden = true;
}

async function call(url, init, label) {
  showError("");
  $("query-label").textContent = label + " …";
  document.body.dataset.state = "loading";
  try {
    const response = await authorizedFetch(url, init);  // auth.js: asks for a key on 401
    const body = await response.json().catch(() => ({ message: response.statusText }));
    if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
    render(body);
    const stages = Object.entries(body.timings_ms).map(([k, v]) => `${k} ${v.toFixed(1)} ms`);
    $("query-label").textContent = `${label}: ${body.hits.length} results (${stages.join(", ")})`;
  } catch (error) {
    $("query-label").textContent = label;
    showError(error.message);
    results.replaceChildren();
  } finally {
    document.body.dataset.state = "done";
  }
}

function render(body) {
  results.dataset.query = body.query;
  if (!body.hits.length) {
    const empty = document.createElement("p");
    empty.className = "empty";
    empty.textContent = "No results (try fewer caption words).";
    results.replaceChildren(empty);
    return;
  }
  results.replaceChildren(...body.hits.map((hit, i) => card(hit, i + 1)));
}

function card(hit, rank) {
  const item = document.createElement("article");
  item.className = "hit";
  item.tabIndex = 0;
  item.dataset.uuid = hit.uuid;
  item.title = "More like this";
  const image = document.createElement("img");
  image.src = hit.image_url;
  image.alt = hit.caption || hit.uuid;
  image.loading = "lazy";
  const meta = document.createElement("div");
  meta.className = "meta";
  const score = document.createElement("div");
  score.className = "score";
  const number = document.createElement("span");
  number.className = "rank";
  number.textContent = `#${rank}`;
  score.append(number, hit.score.toFixed(3));
  const caption = document.createElement("div");
  caption.className = "caption";
  caption.textContent = hit.caption || "";
  meta.append(score, caption);
  if (hit.duplicates) {
    const folded = document.createElement("div");
    folded.className = "folded";
    folded.textContent = `+${hit.duplicates} near-identical`;
    meta.append(folded);
  }
  item.append(image, meta);
  const open = () => similar(hit);
  item.addEventListener("click", open);
  item.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
  return item;
}

function searchImage(file) {
  if (!file) return;
  previewUrl = URL.createObjectURL(file);
  showPreview(previewUrl);
  const form = new FormData();
  form.append("image", file);
  call(`/search?${options()}`, { method: "POST", body: form }, `Pictures like ${file.name}`);
}

function searchText(text) {
  const params = options();
  params.set("text", text);
  call(`/search?${params}`, {}, `“${text}”`);
}

function similar(hit) {
  showPreview(hit.image_url);
  window.scrollTo({ top: 0, behavior: "smooth" });
  call(`/images/${hit.uuid}/similar?${options()}`, {}, `More like ${hit.caption || hit.uuid}`);
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

$("file").addEventListener("change", (e) => searchImage(e.target.files[0]));
$("text-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (text) searchText(text);
});
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  searchImage(e.dataTransfer.files[0]);
});
health();
