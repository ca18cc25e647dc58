// Liminal GitOps UI: live refresh of the page's [data-live] region, and the token-guarded actions.
// The API token is typed by the user, kept in this tab's sessionStorage, and sent only in an
// Authorization header: never in a URL, a cookie or a form post another site could forge.
"use strict";
(function () {
  const REFRESH_MS = 3000;
  const TOKEN_KEY = "liminal-api-token";

  function token() {
    const field = document.getElementById("token");
    const typed = field && field.value.trim();
    if (typed) sessionStorage.setItem(TOKEN_KEY, typed);
    return typed || sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function say(text, failed) {
    const out = document.getElementById("action-result");
    if (!out) return;
    out.textContent = text;
    out.className = failed ? "error" : "success";
  }

  async function refresh() {
    const live = document.querySelector("[data-live]");
    if (!live || document.hidden) return;
    try {
      const response = await fetch(location.pathname, { headers: { "Accept": "text/html" }, cache: "no-store" });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html").querySelector("[data-live]");
      if (!fresh || fresh.innerHTML === live.innerHTML) return;
      // keep open what the reader opened
      const open = new Set([...live.querySelectorAll("details[open] > summary")].map((s) => s.textContent));
      live.innerHTML = fresh.innerHTML;
      live.querySelectorAll("details > summary").forEach((s) => { if (open.has(s.textContent)) s.parentElement.open = true; });
    } catch (e) { /* the controller restarts: try again at the next tick */ }
  }

  async function act(form) {
    const repo = form.dataset.repo;
    const action = form.dataset.action;
    const headers = { "Authorization": "Bearer " + token() };
    let response;
    if (action === "plan") {
      say("Computing the plan (fetch, render, compare)...", false);
      response = await fetch("/repos/" + encodeURIComponent(repo) + "/plan/body", { headers });
      if (response.ok) {
        document.getElementById("plan").innerHTML = await response.text();
        say("Plan computed.", false);
        return;
      }
    } else {
      const body = action === "rollback" ? JSON.stringify({ to: form.elements.to.value.trim() || null }) : "{}";
      headers["Content-Type"] = "application/json";
      say(action === "sync" ? "Asking for a sync..." : "Rolling back (a revert commit is pushed)...", false);
      response = await fetch("/api/v1/repositories/" + encodeURIComponent(repo) + "/" + action, { method: "POST", headers, body });
      if (response.ok) {
        const answer = await response.json();
        say(action === "sync" ? "Sync queued: this page shows the run when it ends."
                              : "Rolled back with commit " + answer.commit.slice(0, 12) + "; the sync is queued.", false);
        refresh();
        return;
      }
    }
    let why = response.statusText;
    try { why = (await response.json()).detail || why; } catch (e) { /* not JSON */ }
    if (response.status === 401 || response.status === 403) sessionStorage.removeItem(TOKEN_KEY);
    say(response.status + ": " + why, true);
  }

  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-action]");
    if (!form) return;
    event.preventDefault();
    act(form);
  });
  setInterval(refresh, REFRESH_MS);
})();
