/* dsocr web page. Plain JavaScript, no build step, no framework; talks only to this server's /v1 API.
 *
 * - API key: kept in localStorage, sent as "Authorization: Bearer KEY" on every request (fetch and XHR;
 *   page images and downloads are fetched the same way when a key is set, since <img>/<a> cannot send it).
 * - Live progress: the job's /events stream read through fetch() (EventSource cannot send headers), at most
 *   MAX_STREAMS at once (HTTP/1.1 allows six connections per host); polling once a second if a stream fails.
 *   Nothing keeps running for a finished job.
 * - Results: the server's HTML result (sanitised server-side) is parsed in a <template> (inert: no scripts
 *   run, nothing loads), checked once more here, and each page's <section> is shown beside the page image.
 *   Markdown is never inserted as HTML. Math is typeset with the vendored KaTeX auto-render.
 */
"use strict";

(() => {
  const KEY_STORE = "dsocr.apiKey";
  const MAX_STREAMS = 2;
  const POLL_MS = 1000;
  const ACTIVE = new Set(["queued", "running"]);
  const FORMATS = ["md", "json", "html", "zip"];
  const ACCEPT_EXT = /\.(pdf|png|jpe?g|webp|tiff?)$/i;
  const ACCEPT_TYPES = new Set(["application/pdf", "image/png", "image/jpeg", "image/webp", "image/tiff"]);

  const $ = (selector, root = document) => root.querySelector(selector);

  /** A DOM element: h("a", {href: "/x", class: "y"}, "text", child). Text is always text, never HTML. */
  function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") el.className = value;
      else if (name === "dataset") Object.assign(el.dataset, value);
      else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function readKey() {
    try { return localStorage.getItem(KEY_STORE) || ""; } catch { return ""; }
  }

  function storeKey(key) {
    try {
      if (key) localStorage.setItem(KEY_STORE, key);
      else localStorage.removeItem(KEY_STORE);
    } catch { /* storage disabled: the key lives until the page is closed */ }
  }

  const state = {
    key: readKey(),
    jobs: new Map(), // id -> job object
    order: [], // ids, newest first
    hasMore: false,
    rows: new Map(), // id -> {tr, update(job)}
    watchers: new Map(), // id -> {controller, timer, stopped}
    pending: [], // active job ids waiting for a stream slot
    view: null, // the open document: {id, blobs: [], observer, controller}
    lastList: 0,
    uploads: Promise.resolve(),
  };

  const ui = {
    status: $("#status"),
    auth: $("#auth-message"),
    keyForm: $("#key-form"),
    key: $("#api-key"),
    keyClear: $("#key-clear"),
    uploadForm: $("#upload-form"),
    file: $("#file"),
    dropzone: $("#dropzone"),
    pages: $("#opt-pages"),
    prompt: $("#opt-prompt"),
    password: $("#opt-password"),
    uploads: $("#uploads"),
    tbody: $("#jobs tbody"),
    empty: $("#jobs-empty"),
    more: $("#more"),
    refresh: $("#refresh"),
    listView: $("#list-view"),
    docView: $("#doc-view"),
    docTitle: $("#doc-title"),
    docSummary: $("#doc-summary"),
    docDownloads: $("#doc-downloads"),
    pagesBox: $("#pages"),
    back: $("#back"),
  };

  // --- messages -------------------------------------------------------------------------------------

  let sayTimer = 0;
  /** Put a message in the aria-live status line (cleared first so a repeated message is announced). */
  function say(message) {
    ui.status.textContent = "";
    clearTimeout(sayTimer);
    sayTimer = setTimeout(() => { ui.status.textContent = message; }, 30);
  }

  function setAuthProblem(on) {
    if (on) {
      ui.auth.textContent = state.key
        ? "The server refused this API key (401 Unauthorized). Check the API key field above and press Save."
        : "This server needs an API key (401 Unauthorized). Enter it in the API key field above and press Save.";
    }
    if (ui.auth.hidden === !on) return;
    ui.auth.hidden = !on;
    if (on) say("API key needed (401 Unauthorized).");
  }

  // --- HTTP -----------------------------------------------------------------------------------------

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function authHeaders(extra) {
    const headers = new Headers(extra || {});
    if (state.key) headers.set("Authorization", `Bearer ${state.key}`);
    return headers;
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch { /* not JSON */ }
    return `${response.status} ${response.statusText}`.trim();
  }

  /** fetch() with the API key; resolves to the Response when it is 2xx, else throws HttpError. */
  async function request(path, options = {}) {
    const response = await fetch(path, { ...options, headers: authHeaders(options.headers), cache: "no-store" });
    if (response.status === 401) {
      setAuthProblem(true);
    } else {
      setAuthProblem(false);
    }
    if (!response.ok) throw new HttpError(response.status, await errorMessage(response));
    return response;
  }

  function describe(error) {
    if (error instanceof HttpError) return error.message;
    return error && error.message ? `network error (${error.message})` : "network error";
  }

  const docUrl = (id) => `/v1/documents/${encodeURIComponent(id)}`;
  const resultUrl = (id, format) => `${docUrl(id)}/result?format=${format}`;
  const imageUrl = (id, number) => `${docUrl(id)}/pages/${number}/image`;

  function baseName(filename) {
    const name = (filename || "document").replace(/\.[A-Za-z0-9]{1,5}$/, "");
    return name || "document";
  }

  // --- downloads ------------------------------------------------------------------------------------

  /** Links to the results. Without an API key the browser follows them; with one, a click fetches the
   *  file with the Authorization header and saves it from a blob URL. */
  function downloadLinks(job) {
    return FORMATS.map((format) => h("a", {
      href: resultUrl(job.id, format),
      download: `${baseName(job.filename)}.${format}`,
      class: "download",
      dataset: { format },
      "aria-label": `Download ${job.filename} as ${format.toUpperCase()}`,
      onclick: (event) => {
        if (!state.key) return;
        event.preventDefault();
        saveWithKey(event.currentTarget.href, event.currentTarget.getAttribute("download"));
      },
    }, format.toUpperCase()));
  }

  async function saveWithKey(url, filename) {
    try {
      const blob = await (await request(url)).blob();
      const href = URL.createObjectURL(blob);
      const link = h("a", { href, download: filename, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(href), 10000);
    } catch (error) {
      say(`Download failed: ${describe(error)}`);
    }
  }

  // --- jobs table -----------------------------------------------------------------------------------

  function formatTime(seconds) {
    if (!seconds) return "";
    return new Date(seconds * 1000).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
  }

  function problemCounts(job) {
    const counts = job.status_counts || {};
    return ["truncated", "repetition", "failed"]
      .filter((name) => counts[name] > 0)
      .map((name) => `${counts[name]} ${name}`)
      .join(", ");
  }

  function makeRow(job) {
    const name = h("span", { class: "name" });
    const idText = h("span", { class: "id" });
    const badge = h("span", { class: "badge" });
    const detail = h("span", {});
    const progress = h("progress", { max: 1 });
    const count = h("span", { class: "count" });
    const time = h("time", {});
    const open = h("button", { type: "button", onclick: () => { location.hash = job.id; } }, "Open");
    const links = h("span", { class: "row-actions downloads-inline" });
    const remove = h("button", { type: "button", class: "danger", onclick: () => deleteJob(job.id) }, "Delete");
    const tr = h("tr", { dataset: { id: job.id } },
      h("td", { class: "file" }, name, idText),
      h("td", { class: "status" }, badge, detail),
      h("td", { class: "progress" }, progress, count),
      h("td", { class: "created" }, time),
      h("td", { class: "actions" }, h("div", { class: "row-actions" }, open, links, remove)));
    let linksFor = "";

    function update(current) {
      tr.dataset.status = current.status;
      name.textContent = current.filename;
      idText.textContent = current.id;
      badge.className = `badge ${current.status}`;
      badge.textContent = current.status;
      detail.replaceChildren();
      if (current.error) detail.append(h("span", { class: "error-text" }, current.error));
      const problems = current.status === "done" ? problemCounts(current) : "";
      if (problems) detail.append(h("span", { class: "counts" }, `pages: ${problems}`));
      const total = current.pages_total;
      if (total) {
        progress.max = total;
        progress.value = Math.min(current.pages_done, total);
      } else if (ACTIVE.has(current.status)) {
        progress.removeAttribute("value"); // indeterminate until the page count is known
      } else {
        progress.max = 1;
        progress.value = current.status === "done" ? 1 : 0;
      }
      progress.setAttribute("aria-label", `Progress of ${current.filename}`);
      count.textContent = `${current.pages_done} / ${total ?? "?"}`;
      time.textContent = formatTime(current.created_at);
      time.dateTime = current.created_at ? new Date(current.created_at * 1000).toISOString() : "";
      const done = current.status === "done";
      open.disabled = !done;
      open.setAttribute("aria-label", `Open ${current.filename}`);
      remove.setAttribute("aria-label", `Delete ${current.filename}`);
      if (done && linksFor !== current.id) {
        links.replaceChildren(...downloadLinks(current));
        linksFor = current.id;
      } else if (!done && linksFor) {
        links.replaceChildren();
        linksFor = "";
      }
    }

    update(job);
    return { tr, update };
  }

  function renderTable() {
    const { tbody } = ui;
    state.order.forEach((id, position) => {
      let row = state.rows.get(id);
      if (!row) {
        row = makeRow(state.jobs.get(id));
        state.rows.set(id, row);
      }
      const at = tbody.children[position];
      if (at !== row.tr) tbody.insertBefore(row.tr, at || null);
    });
    while (tbody.children.length > state.order.length) {
      const tr = tbody.lastElementChild;
      state.rows.delete(tr.dataset.id);
      tr.remove();
    }
    ui.empty.hidden = state.order.length > 0;
    ui.more.hidden = !state.hasMore;
  }

  /** Record a job's latest state; `isNew` puts an unlisted job at the top (it was just uploaded). */
  function updateJob(job, isNew = false) {
    const before = state.jobs.get(job.id);
    state.jobs.set(job.id, job);
    if (isNew && !state.order.includes(job.id)) {
      state.order.unshift(job.id);
      renderTable();
    } else {
      const row = state.rows.get(job.id);
      if (row) row.update(job);
    }
    if (before && ACTIVE.has(before.status) && !ACTIVE.has(job.status)) finished(job);
    watch(job);
  }

  function removeJob(id) {
    stopWatch(id);
    state.jobs.delete(id);
    state.order = state.order.filter((other) => other !== id);
    renderTable();
    if (state.view && state.view.id === id) showList(true);
  }

  function finished(job) {
    if (job.status === "done") {
      const problems = problemCounts(job);
      say(`${job.filename}: done, ${job.pages_total ?? job.pages_done} page(s)${problems ? ` (${problems})` : ""}.`);
    } else {
      say(`${job.filename}: ${job.status}${job.error ? ` — ${job.error}` : ""}.`);
    }
    if (state.view && state.view.id === job.id && !state.view.loaded) openDoc(job.id, true);
  }

  async function loadJobs(append = false) {
    const limit = append ? 20 : Math.min(100, Math.max(20, state.order.length));
    const params = new URLSearchParams({ limit: String(limit) });
    if (append && state.order.length) params.set("after", state.order[state.order.length - 1]);
    state.lastList = Date.now();
    let body;
    try {
      body = await (await request(`/v1/documents?${params}`)).json();
    } catch (error) {
      if (error instanceof HttpError && error.status === 401) {
        stopAllWatches();
        state.order = [];
        state.hasMore = false;
        renderTable();
      } else {
        say(`Could not list documents: ${describe(error)}`);
      }
      return;
    }
    const ids = body.data.map((job) => job.id);
    if (append) {
      state.order = state.order.concat(ids.filter((id) => !state.order.includes(id)));
    } else {
      const listed = new Set(ids);
      for (const id of state.order) if (!listed.has(id)) stopWatch(id);
      state.order = ids;
    }
    state.hasMore = body.has_more;
    // oldest first: the server runs jobs in that order, so their streams are the ones that report soonest
    for (const job of [...body.data].reverse()) updateJob(job);
    renderTable();
  }

  async function deleteJob(id) {
    const job = state.jobs.get(id);
    const name = job ? job.filename : id;
    if (!window.confirm(`Delete ${name} and its results?`)) return;
    try {
      await request(docUrl(id), { method: "DELETE" });
      removeJob(id);
      say(`Deleted ${name}.`);
    } catch (error) {
      if (error instanceof HttpError && error.status === 404) removeJob(id);
      say(`Could not delete ${name}: ${describe(error)}`);
    }
  }

  // --- live progress --------------------------------------------------------------------------------

  function watch(job) {
    if (!ACTIVE.has(job.status)) {
      stopWatch(job.id);
      return;
    }
    if (state.watchers.has(job.id) || state.pending.includes(job.id)) return;
    if (state.watchers.size >= MAX_STREAMS) {
      state.pending.push(job.id);
      return;
    }
    const watcher = { controller: new AbortController(), timer: 0, stopped: false };
    state.watchers.set(job.id, watcher);
    stream(job.id, watcher).catch(() => {
      if (!watcher.stopped) poll(job.id, watcher);
    });
  }

  function stopWatch(id) {
    state.pending = state.pending.filter((other) => other !== id);
    const watcher = state.watchers.get(id);
    if (!watcher) return;
    watcher.stopped = true;
    watcher.controller.abort();
    clearTimeout(watcher.timer);
    state.watchers.delete(id);
    while (state.pending.length && state.watchers.size < MAX_STREAMS) {
      const next = state.jobs.get(state.pending.shift());
      if (next) watch(next);
    }
  }

  function stopAllWatches() {
    state.pending = [];
    for (const id of [...state.watchers.keys()]) stopWatch(id);
  }

  /** Read the job's Server-Sent Events through fetch(); resolves when the job has ended. */
  async function stream(id, watcher) {
    const response = await request(`${docUrl(id)}/events`, {
      signal: watcher.controller.signal,
      headers: { Accept: "text/event-stream" },
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = (buffer + value).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (handleEvent(id, block)) return;
      }
    }
    if (!watcher.stopped) throw new Error("the event stream ended early");
  }

  /** One SSE event block; true when the job has ended (or is gone). */
  function handleEvent(id, block) {
    let kind = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") kind = value;
      else if (field === "data") data.push(value);
    }
    if (kind === "deleted") {
      removeJob(id);
      return true;
    }
    if (!data.length) return false;
    let job;
    try { job = JSON.parse(data.join("\n")); } catch { return false; }
    if (!job || job.id !== id) return false;
    updateJob(job);
    return !ACTIVE.has(job.status);
  }

  function poll(id, watcher) {
    watcher.timer = setTimeout(async () => {
      if (watcher.stopped) return;
      try {
        const job = await (await request(docUrl(id), { signal: watcher.controller.signal })).json();
        updateJob(job);
        if (!ACTIVE.has(job.status) || watcher.stopped) return;
      } catch (error) {
        if (watcher.stopped) return;
        if (error instanceof HttpError && error.status === 404) { removeJob(id); return; }
        if (error instanceof HttpError && error.status === 401) { stopWatch(id); return; }
      }
      poll(id, watcher);
    }, POLL_MS);
  }

  // --- uploads --------------------------------------------------------------------------------------

  function acceptable(file) {
    return ACCEPT_TYPES.has(file.type) || ACCEPT_EXT.test(file.name);
  }

  function formatSize(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }

  function uploadFiles(files) {
    const list = [...files];
    if (!list.length) return;
    if (!ui.pages.checkValidity()) {
      say("Pages: leave empty for all pages, or write pages and ranges like 1-3,7.");
      ui.pages.focus();
      return;
    }
    const options = {
      pages: ui.pages.value.replace(/\s+/g, ""),
      prompt: ui.prompt.value,
      password: ui.password.value,
    };
    say(`Uploading ${list.length} file(s)…`);
    for (const file of list) {
      const item = uploadItem(file);
      if (!acceptable(file)) {
        item.fail("not a PDF, PNG, JPEG, WebP or TIFF file");
        continue;
      }
      state.uploads = state.uploads.then(() => uploadOne(file, options, item));
    }
    state.uploads = state.uploads.then(() => loadJobs());
  }

  function uploadItem(file) {
    const progress = h("progress", { max: 1, value: 0, "aria-label": `Upload of ${file.name}` });
    const text = h("span", {}, "waiting");
    const li = h("li", {}, h("span", { class: "name" }, file.name), h("span", { class: "muted" },
      formatSize(file.size)), progress, text);
    ui.uploads.prepend(li);
    while (ui.uploads.children.length > 20) ui.uploads.lastElementChild.remove();
    return {
      progress,
      set(message, kind = "") {
        text.textContent = message;
        text.className = kind;
      },
      fail(message) {
        progress.remove();
        this.set(`Failed: ${message}`, "error");
        say(`${file.name}: upload failed: ${message}`);
      },
    };
  }

  function uploadOne(file, options, item) {
    return new Promise((resolve) => {
      const form = new FormData();
      form.append("file", file, file.name);
      for (const [name, value] of Object.entries(options)) if (value) form.append(name, value);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/v1/documents");
      if (state.key) xhr.setRequestHeader("Authorization", `Bearer ${state.key}`);
      xhr.responseType = "json";
      item.set("uploading");
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) item.progress.value = event.loaded / event.total;
      };
      xhr.onload = () => {
        const body = xhr.response;
        if (xhr.status === 202 || xhr.status === 200) {
          item.progress.value = 1;
          setAuthProblem(false);
          const existing = xhr.status === 200;
          item.set(existing ? `already uploaded with these options: ${body.id}` : `accepted: ${body.id}`, "ok");
          say(`${file.name}: ${existing ? "already uploaded, showing that document" : "accepted"}.`);
          updateJob(body, true);
        } else {
          if (xhr.status === 401) setAuthProblem(true);
          const message = body && body.error && body.error.message ? body.error.message : `HTTP ${xhr.status}`;
          item.fail(message);
        }
        resolve();
      };
      xhr.onerror = () => {
        item.fail("network error");
        resolve();
      };
      xhr.send(form);
    });
  }

  // --- the document view ----------------------------------------------------------------------------

  const DROP_TAGS = "script,style,iframe,frame,frameset,object,embed,link,meta,base,form,input,button,textarea,select,template,svg,math";

  /** The server already sanitised this HTML; strip anything active once more, and the parts shown here
   *  differently (page number and status line: the page header shows them). */
  function clean(section) {
    for (const el of section.querySelectorAll(DROP_TAGS)) el.remove();
    for (const el of section.querySelectorAll("*")) {
      for (const attr of [...el.attributes]) {
        const name = attr.name.toLowerCase();
        const value = attr.value.trim().toLowerCase();
        if (name.startsWith("on") || name === "srcset" || name === "style" ||
            ((name === "href" || name === "src" || name === "xlink:href") && !/^(https?:|#|[^:]*$)/.test(value))) {
          el.removeAttribute(attr.name);
        }
      }
    }
    for (const link of section.querySelectorAll("a[href]")) {
      link.setAttribute("rel", "noopener noreferrer");
      link.setAttribute("target", "_blank");
    }
    // Figure crops are served at /v1/documents/{id}/images/NAME; they are fetched (with the key) when the
    // page is revealed. Anything else that claims to be an image is dropped.
    for (const img of section.querySelectorAll("img")) {
      const match = /^images\/(page-[0-9]{4,}-[0-9]+\.jpg)$/.exec(img.getAttribute("src") || "");
      if (match) {
        img.removeAttribute("src");
        img.setAttribute("data-figure", match[1]);
        img.setAttribute("alt", "Figure");
      } else {
        img.replaceWith(h("span", { class: "figure-note" }, "[figure]"));
      }
    }
    for (const el of section.querySelectorAll(":scope > .page-number, :scope > p.status")) el.remove();
    return section;
  }

  function typeset(element) {
    if (typeof window.renderMathInElement !== "function") return;
    try {
      window.renderMathInElement(element, {
        delimiters: [
          { left: "\\[", right: "\\]", display: true },
          { left: "\\(", right: "\\)", display: false },
        ],
        throwOnError: false,
        strict: "ignore",
        errorCallback: (message) => console.warn(message),
      });
    } catch (error) {
      console.warn("math rendering failed", error);
    }
  }

  async function loadImage(img, url, view) {
    if (!state.key) {
      img.src = url;
      return;
    }
    try {
      const blob = await (await request(url, { signal: view.controller.signal })).blob();
      if (state.view !== view) return;
      const href = URL.createObjectURL(blob);
      view.blobs.push(href);
      img.src = href;
    } catch (error) {
      if (state.view === view) imageFailed(img);
    }
  }

  function imageFailed(img) {
    img.replaceWith(h("p", { class: "notice error" }, "The page image could not be loaded."));
  }

  function closeDoc() {
    const view = state.view;
    if (!view) return;
    state.view = null;
    view.controller.abort();
    if (view.observer) view.observer.disconnect();
    for (const href of view.blobs) URL.revokeObjectURL(href);
    ui.pagesBox.replaceChildren();
    ui.docDownloads.replaceChildren();
  }

  function showList(updateUrl) {
    closeDoc();
    ui.docView.hidden = true;
    ui.listView.hidden = false;
    if (updateUrl && location.hash) history.pushState(null, "", location.pathname + location.search);
    if (Date.now() - state.lastList > 3000) loadJobs();
  }

  async function openDoc(id, force = false) {
    if (!force && state.view && state.view.id === id) return;
    closeDoc();
    const view = { id, blobs: [], observer: null, controller: new AbortController(), loaded: false };
    state.view = view;
    ui.listView.hidden = true;
    ui.docView.hidden = false;
    const known = state.jobs.get(id);
    ui.docTitle.textContent = known ? known.filename : id;
    ui.docSummary.textContent = "Loading…";
    if (!force) ui.docTitle.focus();
    let job;
    try {
      job = await (await request(docUrl(id), { signal: view.controller.signal })).json();
    } catch (error) {
      if (state.view !== view) return;
      ui.docSummary.textContent = `Could not open ${id}: ${describe(error)}`;
      return;
    }
    if (state.view !== view) return;
    ui.docTitle.textContent = job.filename;
    if (job.status !== "done") {
      ui.docSummary.textContent = ACTIVE.has(job.status)
        ? `This document is ${job.status} (${job.pages_done} / ${job.pages_total ?? "?"} pages); the result `
          + "appears here when it is done."
        : `This document is ${job.status}${job.error ? `: ${job.error}` : ""}.`;
      if (!state.jobs.has(id)) state.jobs.set(id, job);
      watch(job);
      return;
    }
    ui.docDownloads.replaceChildren(...downloadLinks(job));
    let doc;
    let html;
    try {
      const signal = view.controller.signal;
      [doc, html] = await Promise.all([
        request(resultUrl(id, "json"), { signal }).then((r) => r.json()),
        request(resultUrl(id, "html"), { signal }).then((r) => r.text()),
      ]);
    } catch (error) {
      if (state.view !== view) return;
      ui.docSummary.textContent = `Could not load the result: ${describe(error)}`;
      return;
    }
    if (state.view !== view) return;
    view.loaded = true;
    // a <template> parses inertly: no scripts run, nothing loads, and its <style> is never applied
    const template = document.createElement("template");
    template.innerHTML = html;
    renderDoc(view, job, doc, template.content);
  }

  function renderDoc(view, job, doc, parsed) {
    const pages = doc.pages || [];
    const problems = problemCounts(job);
    ui.docSummary.textContent = `${pages.length} page(s)${problems ? `; ${problems}` : ", all ok"}.`;
    const articles = pages.map((page) => pageView(view, job, page, parsed.getElementById(`page-${page.number}`)));
    ui.pagesBox.replaceChildren(...articles);
    if (!pages.length) ui.pagesBox.append(h("p", { class: "muted" }, "This document has no pages."));
    const reveal = (article) => {
      const img = $("img[data-src]", article);
      if (img) {
        loadImage(img, img.dataset.src, view);
        img.removeAttribute("data-src");
      }
      for (const figure of article.querySelectorAll("img[data-figure]")) {
        loadImage(figure, `/v1/documents/${encodeURIComponent(view.id)}/images/${figure.dataset.figure}`, view);
        figure.removeAttribute("data-figure");
      }
      const rendered = $(".rendered", article);
      if (rendered && !rendered.dataset.typeset) {
        rendered.dataset.typeset = "1";
        typeset(rendered);
      }
    };
    if ("IntersectionObserver" in window) {
      view.observer = new IntersectionObserver((entries) => {
        for (const entry of entries) {
          if (!entry.isIntersecting) continue;
          view.observer.unobserve(entry.target);
          reveal(entry.target);
        }
      }, { rootMargin: "800px 0px" });
      for (const article of articles) view.observer.observe(article);
    } else {
      articles.forEach(reveal);
    }
  }

  function pageView(view, job, page, section) {
    const n = page.number;
    const heading = h("h3", { id: `view-page-${n}-title` }, `Page ${n}`);
    const header = h("header", {}, heading, h("span", { class: `badge ${page.status}` }, page.status));
    if (page.status !== "ok") {
      header.append(h("p", { class: "notice warn page-problem" },
        h("strong", {}, `Page ${n} is ${page.status}`), page.reason ? `: ${page.reason}` : "."));
    }
    const img = h("img", {
      alt: `Page ${n} of ${job.filename}, with the layout boxes found on it`,
      "data-src": imageUrl(job.id, n),
      width: page.width || null,
      height: page.height || null,
      decoding: "async",
    });
    img.addEventListener("error", () => imageFailed(img), { once: true });
    const rendered = h("div", { class: "rendered" });
    if (section) {
      const node = document.importNode(clean(section), true);
      if (!node.querySelector(".block")) node.append(h("p", { class: "empty" }, "No text was recognised on this page."));
      rendered.append(node);
    } else {
      rendered.append(h("p", { class: "empty" }, "This page has no rendered result."));
    }
    return h("article", { class: "page-view", id: `view-page-${n}`, dataset: { page: n, status: page.status },
      "aria-labelledby": heading.id },
    header,
    h("div", { class: "page-grid" }, h("figure", { class: "page-image" }, img), rendered));
  }

  // --- routing: #doc_ID opens a document ------------------------------------------------------------

  function route() {
    const id = decodeURIComponent(location.hash.slice(1));
    if (id) openDoc(id);
    else showList(false);
  }

  // --- wiring ---------------------------------------------------------------------------------------

  ui.key.value = state.key;
  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    applyKey(ui.key.value.trim());
  });
  ui.keyClear.addEventListener("click", () => {
    ui.key.value = "";
    applyKey("");
  });

  function applyKey(key) {
    state.key = key;
    storeKey(key);
    say(key ? "API key saved in this browser." : "API key cleared.");
    stopAllWatches();
    loadJobs();
    if (state.view) openDoc(state.view.id, true);
  }

  ui.uploadForm.addEventListener("submit", (event) => event.preventDefault());
  ui.file.addEventListener("change", () => {
    uploadFiles(ui.file.files);
    ui.file.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    ui.dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      event.stopPropagation();
      event.dataTransfer.dropEffect = "copy";
      ui.dropzone.classList.add("dragging");
    });
  }
  ui.dropzone.addEventListener("dragleave", (event) => {
    if (!ui.dropzone.contains(event.relatedTarget)) ui.dropzone.classList.remove("dragging");
  });
  ui.dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    event.stopPropagation();
    ui.dropzone.classList.remove("dragging");
    uploadFiles(event.dataTransfer.files);
  });
  // a file dropped next to the zone must not make the browser navigate away to it
  window.addEventListener("dragover", (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "none";
  });
  window.addEventListener("drop", (event) => event.preventDefault());

  ui.refresh.addEventListener("click", () => loadJobs());
  ui.more.addEventListener("click", () => loadJobs(true));
  ui.back.addEventListener("click", () => showList(true));
  window.addEventListener("hashchange", route);
  window.addEventListener("popstate", route);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && !ui.listView.hidden && Date.now() - state.lastList > 5000) {
      loadJobs();
    }
  });

  loadJobs();
  if (location.hash) route();
})();
