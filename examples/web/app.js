// SiteView live demo: keeps the user's videos and payment attempts on screen, updated in place
// from the APIs' Server-Sent Events streams (GET /videos/live, GET /payments/me/live).
//
// The session token is kept as the cookie `__session` (as Clerk keeps its session) for this
// page's host. Cookies belong to a host, not a port, so the APIs on the same host receive it
// with every credentialed request, and EventSource({withCredentials: true}) sends it; the
// APIs' CORS_ORIGINS must name this page's origin (`make dev` sets it).
"use strict";

(() => {
  const COOKIE = "__session";
  const NUM_ITEMS = 20;
  const TOKEN_SHAPE = /^[A-Za-z0-9_\-.]+$/;

  const params = new URLSearchParams(window.location.search);
  const defaultApi = (port) => `${window.location.protocol}//${window.location.hostname}:${port}`;

  const form = document.getElementById("session-form");
  const tokenInput = document.getElementById("token");
  const apiInputs = {
    videos: document.getElementById("videos-api"),
    payments: document.getElementById("payments-api"),
  };
  // ?videos=…&payments=… override the dev ports (`make dev` prints such a URL when its
  // ports are not the usual ones).
  apiInputs.videos.value = params.get("videos") || defaultApi(8003);
  apiInputs.payments.value = params.get("payments") || defaultApi(8002);

  // --- The session cookie ------------------------------------------------------------------

  function readCookie(name) {
    for (const part of document.cookie.split(";")) {
      const [key, ...rest] = part.trim().split("=");
      if (key === name) return rest.join("=");
    }
    return "";
  }

  function storeToken(token) {
    document.cookie = `${COOKIE}=${token}; path=/; SameSite=Lax`;
  }

  function forgetToken() {
    document.cookie = `${COOKIE}=; path=/; SameSite=Lax; Max-Age=0`;
  }

  // --- Rendering -----------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function when(ms) {
    return ms ? new Date(ms).toLocaleString() : "";
  }

  function money(value) {
    if (!value) return "";
    return `${value.currencySymbol || ""}${value.amountFormatted} ${value.currency || ""}`.trim();
  }

  function flash(node) {
    node.classList.remove("changed");
    void node.offsetWidth; // restart the animation
    node.classList.add("changed");
  }

  // Brings `container`'s children in line with `items` (in order), reusing the element of each
  // id that is already there, so an update changes the page in place.
  function syncChildren(container, items, attribute, create, update) {
    const existing = new Map();
    for (const child of Array.from(container.children)) {
      existing.set(child.getAttribute(attribute), child);
    }
    let previous = null;
    for (const item of items) {
      let node = existing.get(item.id);
      if (node) {
        existing.delete(item.id);
      } else {
        node = create();
        node.setAttribute(attribute, item.id);
      }
      if (node.dataset.version !== String(item.updatedAt)) {
        update(node, item);
        if (node.dataset.version !== undefined) flash(node);
        node.dataset.version = String(item.updatedAt);
      }
      const expected = previous ? previous.nextElementSibling : container.firstElementChild;
      if (node !== expected) container.insertBefore(node, expected);
      previous = node;
    }
    for (const stale of existing.values()) stale.remove();
  }

  function createVideo() {
    const item = el("li", "video");
    item.append(el("a", "title"), el("span", "views"), el("time", "updated"));
    return item;
  }

  function updateVideo(item, video) {
    const link = item.querySelector(".title");
    link.textContent = video.title;
    if (/^https?:\/\//i.test(video.url)) link.href = video.url;
    else link.removeAttribute("href");
    item.querySelector(".views").textContent = `${video.views} view${video.views === 1 ? "" : "s"}`;
    item.querySelector(".updated").textContent = when(video.updatedAt);
  }

  function createAttempt() {
    const row = el("tr", "attempt");
    for (const name of ["id", "payment", "status", "total", "updated"]) {
      row.append(el("td", name));
    }
    row.querySelector(".id").append(el("code"));
    row.querySelector(".status").append(el("span", "badge"));
    return row;
  }

  function updateAttempt(row, attempt) {
    row.dataset.paymentId = attempt.paymentId || "";
    row.dataset.status = attempt.status;
    row.querySelector(".id code").textContent = attempt.id;
    row.querySelector(".payment").textContent = attempt.paymentId || "";
    const badge = row.querySelector(".badge");
    badge.textContent = attempt.status;
    badge.className = `badge status-${attempt.status}`;
    row.querySelector(".total").textContent = money(attempt.totals && attempt.totals.grandTotal);
    row.querySelector(".updated").textContent = when(attempt.updatedAt);
  }

  // --- Streams -------------------------------------------------------------------------------

  const STREAMS = {
    videos: {
      path: `/videos/live?numItems=${NUM_ITEMS}`,
      list: document.getElementById("video-list"),
      empty: document.getElementById("videos-empty"),
      attribute: "data-video-id",
      create: createVideo,
      update: updateVideo,
    },
    payments: {
      path: `/payments/me/live?numItems=${NUM_ITEMS}`,
      list: document.getElementById("payment-list"),
      empty: document.getElementById("payments-empty"),
      attribute: "data-attempt-id",
      create: createAttempt,
      update: updateAttempt,
    },
  };
  const open = {}; // stream name -> {source, updates}

  function setState(name, state, text) {
    const node = document.querySelector(`.state[data-stream="${name}"]`);
    node.dataset.state = state;
    node.textContent = text;
  }

  // EventSource does not say why a connection failed: ask the same URL once with fetch, which
  // tells the status (401, 429…), and stop reading as soon as the headers are in.
  async function explainFailure(name, url) {
    const controller = new AbortController();
    try {
      const response = await fetch(url, { credentials: "include", signal: controller.signal });
      controller.abort();
      if (response.status === 401) {
        setState(name, "unauthorized", "session expired or invalid (401): paste a fresh token");
      } else if (response.status === 429) {
        setState(name, "error", "too many open streams (429): close a tab, then reconnect");
      } else if (response.ok) {
        setState(name, "error", "the stream closed: press Connect to open it again");
      } else {
        setState(name, "error", `the API answered ${response.status}`);
      }
    } catch (error) {
      setState(
        name,
        "error",
        `cannot reach ${url} (is make dev running, and does CORS_ORIGINS name this page?)`,
      );
    }
  }

  function openStream(name, base) {
    closeStream(name);
    const stream = STREAMS[name];
    const url = base.replace(/\/+$/, "") + stream.path;
    let source;
    try {
      source = new EventSource(url, { withCredentials: true });
    } catch (error) {
      setState(name, "error", `not a usable address: ${base}`);
      return;
    }
    const entry = { source, updates: 0 };
    open[name] = entry;
    setState(name, "connecting", "connecting…");
    source.onopen = () => setState(name, "live", "live");
    source.addEventListener(name, (event) => {
      const body = JSON.parse(event.data);
      syncChildren(stream.list, body.page, stream.attribute, stream.create, stream.update);
      stream.empty.hidden = body.page.length > 0;
      entry.updates += 1;
      const more = body.isDone ? "" : ` · newest ${NUM_ITEMS} shown`;
      setState(name, "live", `live · ${entry.updates} update(s), last ${when(Date.now())}${more}`);
    });
    source.onerror = () => {
      if (open[name] !== entry) return;
      if (source.readyState === EventSource.CONNECTING) {
        setState(name, "reconnecting", "connection lost: reconnecting…");
      } else {
        setState(name, "checking", "connection failed: checking why…");
        explainFailure(name, url);
      }
    };
  }

  function closeStream(name) {
    if (open[name]) {
      open[name].source.close();
      delete open[name];
    }
  }

  function connect() {
    for (const name of Object.keys(STREAMS)) openStream(name, apiInputs[name].value);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = tokenInput.value.trim();
    if (!TOKEN_SHAPE.test(token)) {
      for (const name of Object.keys(STREAMS)) {
        setState(name, "error", "that is not a token: paste the output of siteview-dev-token");
      }
      return;
    }
    storeToken(token);
    tokenInput.value = "";
    connect();
  });

  document.getElementById("disconnect").addEventListener("click", () => {
    forgetToken();
    for (const [name, stream] of Object.entries(STREAMS)) {
      closeStream(name);
      stream.list.replaceChildren();
      stream.empty.hidden = true;
      setState(name, "idle", "not connected");
    }
  });

  // A token stored earlier on this host: connect straight away.
  if (readCookie(COOKIE)) connect();
})();
