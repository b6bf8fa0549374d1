// API keys for the page, apart from the page's own logic (app.js calls authorizedFetch).
// The key stays in this tab (sessionStorage) and is asked for when the API answers 401.
"use strict";

const API_KEY_STORE = "imgsearch-api-key";

function askForApiKey(message) {
  const key = (window.prompt(`${message}\n\nAPI key:`) || "").trim();
  if (key) sessionStorage.setItem(API_KEY_STORE, key);
  return Boolean(key);
}

async function authorizedFetch(url, init = {}) {
  for (;;) {
    const headers = new Headers(init.headers || {});
    const key = sessionStorage.getItem(API_KEY_STORE);
    if (key) headers.set("X-API-Key", key);
    const response = await fetch(url, { ...init, headers });
    if (response.status !== 401) return response;
    sessionStorage.removeItem(API_KEY_STORE);
    const body = await response.clone().json().catch(() => ({}));
    if (!askForApiKey(body.message || "This search service needs an API key.")) return response;
  }
}
