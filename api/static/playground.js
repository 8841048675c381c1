// The playground page: chat with the model through the gateway's public API only.
//
// Each turn is one chat completion session, streamed with fetch rather than EventSource,
// which cannot send an Authorization header. The turn's session id goes into the page URL,
// and after every event the text shown so far is saved (sessionStorage) together with the
// id of the last event it includes. A reload shows that text again and resumes the stream
// after that event: the gateway replays only what the page has not seen, so nothing is
// shown twice and nothing is missed.
"use strict";

const $ = (id) => document.getElementById(id);
// localStorage: the key and the token limit outlive the tab.
const API_KEY_ITEM = "playground:api-key";
const MAX_TOKENS_ITEM = "playground:max-tokens";
const sessionItem = (sessionId) => `playground:session:${sessionId}`;
const QUEUE_POLL_MS = 1000;

let messages = []; // the conversation so far, sent with the next prompt
let earlier = []; // what the finished turns showed, saved with the current one
let turn = null; // the turn streaming now (or last)
let following = null; // aborts the request and stream of the turn on screen (new chat)

function startFollowing() {
  following?.abort();
  following = new AbortController();
  return following.signal;
}

function authHeaders(extra = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function errorMessage(response) {
  const body = await response.json().catch(() => null);
  return body?.error?.message || `${response.status} ${response.statusText}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function dataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// Reads a text/event-stream body and calls onEvent(id, data) for each event, up to
// "data: [DONE]"; true if it got there, false if the connection ended before.
async function readEvents(response, onEvent) {
  const body = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let id = null;
  let data = [];
  for (;;) {
    const { value, done } = await body.read();
    if (done) return false;
    // Lines end with \n, \r\n or \r; a \r at the very end may be the first half of a \r\n.
    const lines = (buffer + value).split(/\r\n|\r(?!$)|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (data.length) {
          const text = data.join("\n");
          if (text === "[DONE]") {
            await body.cancel();
            return true;
          }
          onEvent(id, text);
        }
        id = null;
        data = [];
      } else if (!line.startsWith(":")) { // a line starting with ':' is a keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const rest = colon < 0 ? "" : line.slice(colon + 1);
        const value = rest.startsWith(" ") ? rest.slice(1) : rest;
        if (field === "id") id = value;
        else if (field === "data") data.push(value);
      }
    }
  }
}

// One prompt and its answer on screen; `state` is what a reload needs to show it again.
class Turn {
  constructor(state) {
    this.state = {
      sessionId: null, lastEventId: null, prompt: "", files: [], reasoning: "", answer: "",
      finish: null, error: null, done: false, ...state,
    };
    this.el = $("turn-template").content.firstElementChild.cloneNode(true);
    this.q = (selector) => this.el.querySelector(selector);
    this.q(".prompt").textContent = this.state.prompt;
    this.q(".attachments").append(...this.state.files.map((name) => fileChip(name)));
    this.q(".reasoning-text").textContent = this.state.reasoning;
    this.q(".answer").textContent = this.state.answer;
    this.showReasoningSize();
    this.textChunks = 0; // chunks with text since the first one: the live tokens/s
    this.firstChunkAt = 0;
    $("turns").append(this.el);
    if (this.state.done) this.showEnd();
  }

  setStatus(state, text) {
    this.el.dataset.state = state;
    this.q(".status").textContent = text;
  }

  attach(sessionId) {
    this.state.sessionId = sessionId;
    const url = new URL(location.href);
    url.searchParams.set("session", sessionId);
    history.replaceState(null, "", url);
    this.save();
  }

  save() {
    if (!this.state.sessionId) return;
    const item = JSON.stringify({ ...this.state, earlier });
    try {
      sessionStorage.setItem(sessionItem(this.state.sessionId), item);
    } catch {
      // Storage full: the page goes on; a reload would replay the session from its start.
      sessionStorage.removeItem(sessionItem(this.state.sessionId));
    }
  }

  onEvent(id, data) {
    const chunk = JSON.parse(data);
    if (chunk.error) {
      this.state.error = chunk.error.message || "generation failed";
    }
    for (const choice of chunk.choices || []) {
      if (choice.index) continue; // with n > 1 the page shows the first choice
      const delta = choice.delta || {};
      const reasoning = delta.reasoning_content || "";
      const content = delta.content || "";
      if (reasoning) this.q(".reasoning-text").append(reasoning);
      if (content) this.q(".answer").append(content);
      this.state.reasoning += reasoning;
      this.state.answer += content;
      if (reasoning || content) this.countChunk();
      if (choice.finish_reason) this.state.finish = choice.finish_reason;
    }
    if (id) this.state.lastEventId = id;
    this.save(); // after the text, with the id of the event it ends with
    if (this.el.dataset.state !== "streaming" && !this.state.finish) this.setStatus("streaming", "streaming");
    this.showReasoningSize();
    keepScrolled();
  }

  countChunk() {
    const now = performance.now();
    if (!this.textChunks++) this.firstChunkAt = now;
    const seconds = (now - this.firstChunkAt) / 1000;
    if (seconds > 0) this.q(".rate").textContent = `${((this.textChunks - 1) / seconds).toFixed(1)} tokens/s`;
  }

  // While no event has come, the session waits in the queue (or for room in a batch).
  async watchQueue() {
    while (this.el.dataset.state === "waiting" && this.el.isConnected) {
      const response = await fetch(`/v1/sessions/${encodeURIComponent(this.state.sessionId)}`, {
        headers: authHeaders(),
      }).catch(() => null);
      if (response?.ok && this.el.dataset.state === "waiting") {
        const session = await response.json();
        if (session.status === "queued" && session.queue_position !== null) {
          const ahead = session.queue_position;
          this.q(".status").textContent = `queued: ${ahead} request${ahead === 1 ? "" : "s"} ahead`;
        } else if (session.status === "queued") {
          this.q(".status").textContent = "queued: a worker is taking it";
        } else if (session.status === "running") {
          this.q(".status").textContent = "starting";
        }
      }
      await sleep(QUEUE_POLL_MS);
    }
  }

  fail(message) {
    this.state.error = message;
    this.state.done = true;
    this.save();
    this.showEnd();
  }

  showEnd() {
    const { error, finish } = this.state;
    if (error) this.setStatus("error", `error: ${error}`);
    else if (finish === "cancelled") this.setStatus("cancelled", "cancelled");
    else this.setStatus("finished", `finished (${finish || "stop"})`);
  }

  // The folded reasoning says how long it is, and stays hidden while there is none.
  showReasoningSize() {
    const { length } = this.state.reasoning;
    this.q(".reasoning").hidden = !length;
    this.q(".reasoning summary").textContent = `Thinking (${length} characters)`;
  }
}

function fileChip(name) {
  const chip = document.createElement("span");
  chip.textContent = name;
  return chip;
}

function keepScrolled() {
  const nearBottom = innerHeight + scrollY >= document.body.scrollHeight - 200;
  if (nearBottom) scrollTo(0, document.body.scrollHeight);
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

// Reads a turn's stream to its end; a turn that ends is added to the conversation.
async function follow(current, response, userMessage, aborted) {
  setBusy(true);
  if (!current.state.lastEventId) {
    current.setStatus("waiting", "waiting for a worker");
    current.watchQueue();
  } else {
    current.setStatus("streaming", "streaming (reconnected)");
  }
  let ended = false;
  try {
    ended = await readEvents(response, (id, data) => current.onEvent(id, data));
  } catch (error) {
    if (aborted.aborted) return;
    current.setStatus("error", `connection lost (${error.message}); reload to resume`);
  }
  if (aborted.aborted) return;
  setBusy(false);
  if (!ended) {
    if (current.el.dataset.state !== "error") current.setStatus("error", "connection lost; reload to resume");
    return;
  }
  current.state.done = true;
  current.showEnd();
  current.save(); // before it joins `earlier`: saved with the turns before it only
  if (!current.state.error) {
    earlier.push({ ...current.state });
    messages.push(userMessage, { role: "assistant", content: current.state.answer });
  }
}

async function send(event) {
  event.preventDefault();
  if ($("send").disabled) return; // one turn at a time
  const prompt = $("prompt").value.trim();
  const images = [...$("image").files];
  const videos = [...$("video").files];
  if (!prompt && !images.length && !videos.length) return;
  setBusy(true);
  $("stop").disabled = true; // until the session id is known
  const content = [];
  if (prompt) content.push({ type: "text", text: prompt });
  for (const file of images) content.push({ type: "image_url", image_url: { url: await dataUrl(file) } });
  for (const file of videos) content.push({ type: "video_url", video_url: { url: await dataUrl(file) } });
  const userMessage = { role: "user", content };
  const body = { messages: [...messages, userMessage], stream: true };
  const maxTokens = parseInt($("max-tokens").value, 10);
  if (maxTokens > 0) body.max_tokens = maxTokens;

  turn = new Turn({ prompt, files: [...images, ...videos].map((file) => file.name) });
  for (const part of content.filter((p) => p.type === "image_url")) {
    const img = document.createElement("img");
    img.src = part.image_url.url;
    turn.q(".attachments").append(img);
  }
  $("composer").reset();

  const current = turn;
  const aborted = startFollowing();
  let response;
  try {
    response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
      signal: aborted,
    });
  } catch (error) {
    if (aborted.aborted) return;
    current.fail(error.message);
    setBusy(false);
    return;
  }
  if (!response.ok) {
    current.fail(await errorMessage(response));
    setBusy(false);
    return;
  }
  current.attach(response.headers.get("X-Session-Id"));
  await follow(current, response, userMessage, aborted);
}

async function stop() {
  if (!turn?.state.sessionId) return;
  $("stop").disabled = true;
  turn.q(".status").textContent = "cancelling";
  const response = await fetch(`/v1/cancel/${encodeURIComponent(turn.state.sessionId)}`, {
    method: "POST",
    headers: authHeaders(),
  }).catch(() => null);
  // The stream itself then ends with finish_reason "cancelled", which the turn shows.
  if (response && !response.ok) turn.q(".status").textContent = `cancel failed: ${await errorMessage(response)}`;
}

// After a reload: show the saved text, then continue the stream after its last event.
async function resume(sessionId) {
  const stored = JSON.parse(sessionStorage.getItem(sessionItem(sessionId)) || "null");
  // A session opened from a link in a new tab has nothing saved: replay it all.
  const state = stored || { sessionId, prompt: `(session ${sessionId})` };
  earlier = state.earlier || [];
  delete state.earlier;
  for (const shown of earlier) {
    new Turn(shown);
    messages.push({ role: "user", content: shown.prompt }, { role: "assistant", content: shown.answer });
  }
  turn = new Turn(state);
  turn.state.sessionId = sessionId;
  const userMessage = { role: "user", content: state.prompt };
  if (state.done) return;
  const headers = authHeaders(state.lastEventId ? { "Last-Event-ID": state.lastEventId } : {});
  const aborted = startFollowing();
  let response;
  try {
    response = await fetch(`/v1/sessions/${encodeURIComponent(sessionId)}/stream`, { headers, signal: aborted });
  } catch (error) {
    if (aborted.aborted) return;
    turn.setStatus("error", `connection failed (${error.message}); reload to retry`);
    return;
  }
  if (!response.ok) {
    turn.fail(await errorMessage(response));
    return;
  }
  await follow(turn, response, userMessage, aborted);
}

function newChat() {
  following?.abort(); // stops reading only: the session itself goes on until it ends
  following = null;
  messages = [];
  earlier = [];
  turn = null;
  $("turns").replaceChildren();
  setBusy(false);
  const url = new URL(location.href);
  url.searchParams.delete("session");
  history.replaceState(null, "", url);
}

for (const [input, item] of [["api-key", API_KEY_ITEM], ["max-tokens", MAX_TOKENS_ITEM]]) {
  $(input).value = localStorage.getItem(item) || "";
  $(input).addEventListener("input", () => localStorage.setItem(item, $(input).value));
}
$("composer").addEventListener("submit", send);
$("stop").addEventListener("click", stop);
$("new-chat").addEventListener("click", newChat);
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
const resumeId = new URL(location.href).searchParams.get("session");
if (resumeId) resume(resumeId);
