// Tokenwire browser client: follow one stream and assemble its text.
//
//   import { createStream, TokenwireStream } from "/v1/client.js";
//   const created = await createStream("/v1/streams", { prompt: "Hello" });
//   const stream = new TokenwireStream(created.events_url);
//   stream.addEventListener("text", () => { output.textContent = stream.text; });
//   await stream.finished;
//
// It wraps the browser's EventSource (or a WebSocket), applies `reset` and
// `snapshot`, counts progress, cancels, and never gives up on a transient drop:
// where EventSource stops for good (any non-200 answer, such as a 503 while
// Redis is away, or a proxy's 502) it asks the edge why, and reconnects from the
// last cursor unless the answer is final (401, 403, 404, 410). No dependencies.

/** @typedef {"connecting" | "live" | "reconnecting" | "done" | "error"} StreamState */

/**
 * @typedef {object} Progress
 * @property {number} tokens  token events so far (one per buffer flush; with
 *   `buffer: "none"` one per model token); on `done`, the model's own count
 * @property {number} chars  characters of text so far
 * @property {number} tokensPerSecond  `tokens` over the time since the first one;
 *   on `done`, the worker's figure
 * @property {number} elapsedMs  since the stream was followed
 */

/**
 * @typedef {object} FollowOptions
 * @property {"sse" | "websocket"} [transport]  default "sse"
 * @property {string} [wsUrl]  the stream's WebSocket URL (default: from the events URL)
 * @property {string | (() => Promise<unknown>)} [cancel]  a URL to POST to cancel, or a
 *   callback that asks your backend to; without it, `cancel()` works over the WebSocket only
 * @property {string} [lastEventId]  resume after this cursor
 * @property {boolean} [snapshot]  a late joiner starts from one `snapshot` event
 * @property {number} [maxRetryDelayMs]  cap of the reconnect backoff (default 10000)
 */

/** Statuses after which a stream can never be followed again. */
const FINAL_STATUSES = new Set([401, 403, 404, 410]);
const DATA_EVENTS = ["start", "token", "reset", "snapshot", "done", "error"];

/**
 * Create a stream through `createUrl` (the edge's `POST /v1/streams`, or your
 * backend's stand-in that answers the same way) and return its JSON answer:
 * `{id, events_url, ws_url, ...}`.
 * @param {string} createUrl
 * @param {object} job  `{prompt}` or `{messages}`, and options
 * @param {{headers?: Record<string, string>}} [init]
 * @returns {Promise<{id: string, events_url: string, ws_url?: string} & Record<string, unknown>>}
 */
export async function createStream(createUrl, job, init = {}) {
  const response = await fetch(createUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...init.headers },
    body: JSON.stringify(job),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = body.error || { code: "http_" + response.status, message: response.statusText };
    throw Object.assign(new Error(error.message), { code: error.code, status: response.status });
  }
  return body;
}

/**
 * One stream, followed to its end. Events (all `CustomEvent`s, `detail` as noted):
 * `text` (`{text, delta}`), `state` (the new `StreamState`), `progress` (`Progress`),
 * `reset` (`{reason}`), `done` (the `done` data), `error` (`{code, message}`).
 */
export class TokenwireStream extends EventTarget {
  /** @type {string} */ text = "";
  /** @type {StreamState} */ state = "connecting";
  /** @type {string | null} the cursor of the last event received */ lastEventId = null;
  /** @type {Record<string, unknown> | null} the `done` event's data */ result = null;
  /** @type {{code: string, message: string} | null} */ error = null;
  /** @type {Progress} */ progress = { tokens: 0, chars: 0, tokensPerSecond: 0, elapsedMs: 0 };
  /** @type {Promise<TokenwireStream>} settles when the stream is done or failed */ finished;

  #options;
  #eventsUrl;
  #wsUrl;
  #source = /** @type {EventSource | null} */ (null);
  #ws = /** @type {WebSocket | null} */ (null);
  #attempt = 0;
  #timer = /** @type {ReturnType<typeof setTimeout> | undefined} */ (undefined);
  #startedAt = performance.now();
  #firstTokenAt = 0;
  #resolve = /** @type {(s: TokenwireStream) => void} */ (() => {});
  #ended = false;

  /**
   * @param {string} eventsUrl  the stream's `events_url` (as your backend handed it over,
   *   token included)
   * @param {FollowOptions} [options]
   */
  constructor(eventsUrl, options = {}) {
    super();
    this.#options = options;
    this.#eventsUrl = new URL(eventsUrl, location.href);
    this.#wsUrl = new URL(options.wsUrl || this.#eventsUrl.href.replace(/\/events(?=\?|$)/, "/ws"),
      location.href);
    this.#wsUrl.protocol = this.#wsUrl.protocol.replace(/^http/, "ws");
    this.lastEventId = options.lastEventId || null;
    this.finished = new Promise((resolve) => { this.#resolve = resolve; });
    this.#connect();
  }

  /** Ask for the generation to stop; the stream then ends with `done` (`cancelled`). */
  async cancel() {
    const how = this.#options.cancel;
    if (typeof how === "function") {
      await how();
    } else if (typeof how === "string") {
      const response = await fetch(how, { method: "POST" });
      if (!response.ok) throw new Error(`cancel failed: HTTP ${response.status}`);
    } else if (this.#ws && this.#ws.readyState === WebSocket.OPEN) {
      this.#ws.send(JSON.stringify({ type: "cancel" }));
    } else {
      throw new Error("no way to cancel: pass options.cancel (a URL or a callback)");
    }
  }

  /** Drop the connection and resume from the last cursor (after a network change, say). */
  reconnect() {
    if (this.#ended) return;
    this.#disconnect();
    this.#setState("reconnecting");
    this.#connect();
  }

  /** Stop following; no more events. */
  close() {
    this.#ended = true;
    clearTimeout(this.#timer);
    this.#disconnect();
  }

  #connect() {
    if (this.#options.transport === "websocket") this.#openWebSocket();
    else this.#openEventSource();
  }

  #disconnect() {
    clearTimeout(this.#timer);
    this.#source?.close();
    this.#source = null;
    if (this.#ws) {
      this.#ws.onclose = null;
      this.#ws.close();
      this.#ws = null;
    }
  }

  #openEventSource() {
    const source = new EventSource(this.#resumeUrl(this.#eventsUrl).href);
    this.#source = source;
    source.onopen = () => this.#live();
    // A `reconnect` notice (no id) says why this response is about to end;
    // the browser then comes back by itself after its `retry:`.
    source.addEventListener("reconnect", () => {
      if (!this.#ended && source === this.#source) this.#setState("reconnecting");
    });
    for (const type of DATA_EVENTS) {
      source.addEventListener(type, (event) => {
        if (!(event instanceof MessageEvent)) {  // a transport error, not our `error` event
          this.#sourceFailed(source);
        } else {
          this.#apply(type, event.lastEventId, JSON.parse(event.data));
        }
      });
    }
  }

  /** @param {EventSource} source */
  #sourceFailed(source) {
    if (this.#ended || source !== this.#source) return;
    this.#setState("reconnecting");
    if (source.readyState === EventSource.CLOSED) {  // the browser gave up: we don't
      source.close();
      this.#source = null;
      this.#retryLater();
    }  // else the browser reconnects by itself, with Last-Event-ID
  }

  #openWebSocket() {
    const ws = new WebSocket(this.#resumeUrl(this.#wsUrl).href);
    this.#ws = ws;
    ws.onopen = () => this.#live();
    ws.onmessage = (message) => {
      const { id, type, ...data } = JSON.parse(message.data);
      this.#apply(type, id, data);
    };
    ws.onclose = () => {
      if (this.#ended || ws !== this.#ws) return;
      this.#ws = null;
      this.#setState("reconnecting");
      this.#retryLater();
    };
  }

  /** @param {URL} url */
  #resumeUrl(url) {
    const resumed = new URL(url.href);
    if (this.lastEventId) resumed.searchParams.set("last_event_id", this.lastEventId);
    else if (this.#options.snapshot) resumed.searchParams.set("snapshot", "1");
    return resumed;
  }

  #live() {
    this.#attempt = 0;
    this.#setState("live");
  }

  /** Reconnect after a jittered, capped backoff, unless the edge says the stream is over. */
  #retryLater() {
    const cap = this.#options.maxRetryDelayMs ?? 10000;
    const delay = Math.min(cap, 250 * 2 ** this.#attempt) * (0.5 + Math.random() / 2);
    this.#attempt += 1;
    this.#timer = setTimeout(async () => {
      const status = await this.#probe();
      if (this.#ended) return;
      if (status === 204) this.#finishFromStatus();
      else if (FINAL_STATUSES.has(status)) {
        this.#fail({ code: "http_" + status, message: `the stream is not available (HTTP ${status})` });
      } else this.#connect();
    }, delay);
  }

  /** The status the edge answers a resume with now (0: unreachable). */
  async #probe() {
    const controller = new AbortController();
    try {
      const response = await fetch(this.#resumeUrl(this.#eventsUrl).href, {
        headers: { Accept: "text/event-stream" }, signal: controller.signal, cache: "no-store",
      });
      return response.status;
    } catch {
      return 0;
    } finally {
      controller.abort();  // a 200 would start streaming: we only wanted its status
    }
  }

  /** 204: nothing after our cursor. Take the final text and outcome from the status URL. */
  async #finishFromStatus() {
    const statusUrl = new URL(this.#eventsUrl.href.replace(/\/events(?=\?|$)/, ""));
    try {
      const status = await (await fetch(statusUrl.href, { cache: "no-store" })).json();
      if (typeof status.text === "string" && status.cursor !== this.lastEventId) {
        this.#setText(status.text, "");
      }
      if (status.error) return this.#fail(status.error);
      this.#done(status.done || {});
    } catch {
      this.#done(this.result || {});
    }
  }

  /**
   * @param {string} type
   * @param {string} id
   * @param {any} data
   */
  #apply(type, id, data) {
    if (this.#ended) return;
    if (id) this.lastEventId = id;
    if (type === "token") {
      this.#firstTokenAt ||= performance.now();
      this.progress.tokens += 1;
      this.#setText(this.text + data.content, data.content);
    } else if (type === "reset") {
      this.progress.tokens = 0;
      this.#firstTokenAt = 0;
      this.#setText("", "");
      this.dispatchEvent(new CustomEvent("reset", { detail: { reason: data.reason } }));
    } else if (type === "snapshot") {
      this.#setText(data.content, data.content);
    } else if (type === "done") {
      this.progress.tokens = data.tokens ?? this.progress.tokens;
      this.progress.tokensPerSecond = data.tokens_per_second ?? this.progress.tokensPerSecond;
      this.#done(data);
    } else if (type === "error") {
      this.#fail({ code: data.code, message: data.message });
    }
  }

  /**
   * @param {string} text
   * @param {string} delta
   */
  #setText(text, delta) {
    this.text = text;
    const now = performance.now();
    this.progress.chars = text.length;
    this.progress.elapsedMs = Math.round(now - this.#startedAt);
    const seconds = this.#firstTokenAt ? (now - this.#firstTokenAt) / 1000 : 0;
    if (seconds > 0) this.progress.tokensPerSecond = this.progress.tokens / seconds;
    this.dispatchEvent(new CustomEvent("text", { detail: { text, delta } }));
    this.dispatchEvent(new CustomEvent("progress", { detail: this.progress }));
  }

  /** @param {Record<string, unknown>} data */
  #done(data) {
    this.result = data;
    this.progress.elapsedMs = Math.round(performance.now() - this.#startedAt);
    this.#end("done");
    this.dispatchEvent(new CustomEvent("progress", { detail: this.progress }));
    this.dispatchEvent(new CustomEvent("done", { detail: data }));
  }

  /** @param {{code: string, message: string}} error */
  #fail(error) {
    this.error = error;
    this.#end("error");
    this.dispatchEvent(new CustomEvent("error", { detail: error }));
  }

  /** @param {StreamState} state */
  #end(state) {
    this.close();
    this.#setState(state);
    this.#resolve(this);
  }

  /** @param {StreamState} state */
  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }
}

/**
 * @typedef {object} ConversationMessage
 * @property {string} id
 * @property {"system" | "user" | "assistant"} role
 * @property {string} content
 * @property {string} [status]  an answer's outcome: "done" or "cancelled"
 */

/**
 * A conversation (history kept by the edge, one answer at a time), for a browser
 * holding a conversation token — never the API key:
 *
 *   const chat = new TokenwireConversation("/v1/conversations/" + id, { token });
 *   chat.addEventListener("history", () => render(chat.messages));
 *   chat.addEventListener("turn", (e) => follow(e.detail.stream));  // a TokenwireStream
 *   await chat.load();           // the history, and the answer being written, if any
 *   await chat.send("Hello");    // 409 while an answer is being written
 *
 * Events: `history` (messages changed), `turn` (`{stream, messageId}`: an answer
 * began, here or in another tab; `stream` is a `TokenwireStream`), `error`.
 * With `watchMs`, an idle conversation is re-read that often, so answers
 * started elsewhere (another tab) are followed too.
 */
export class TokenwireConversation extends EventTarget {
  /** @type {ConversationMessage[]} */ messages = [];
  /** @type {TokenwireStream | null} the answer being written */ active = null;
  /** @type {string | null} */ activeMessageId = null;

  #url;
  #options;
  #timer = /** @type {ReturnType<typeof setTimeout> | undefined} */ (undefined);
  #closed = false;

  /**
   * @param {string} url  `/v1/conversations/<id>` (absolute or relative)
   * @param {{token?: string, transport?: "sse" | "websocket", watchMs?: number}} [options]
   */
  constructor(url, options = {}) {
    super();
    this.#url = new URL(url, location.href).href.replace(/\/$/, "");
    this.#options = options;
  }

  /** Read the history; follow the answer being written, if any. */
  async load() {
    const body = await this.#request("GET", "");
    this.messages = body.messages;
    this.dispatchEvent(new CustomEvent("history", { detail: this.messages }));
    if (body.active && body.active.message_id !== this.activeMessageId) {
      this.#follow(body.active.events_url, body.active.message_id, body.active.stream_id);
    }
    this.#watch();
    return this;
  }

  /**
   * Post a message; returns the `TokenwireStream` of its answer.
   * @param {string} content
   * @param {object} [options]  job options: `max_tokens`, `temperature`, `model`, ...
   */
  async send(content, options = {}) {
    const turn = await this.#request("POST", "/messages", { content, ...options });
    this.messages = [...this.messages, turn.user_message];
    this.dispatchEvent(new CustomEvent("history", { detail: this.messages }));
    return this.#follow(turn.events_url, turn.message_id, turn.id);
  }

  /** Cancel the answer being written (it is kept as far as it got, marked cancelled). */
  async cancel() {
    return this.#request("POST", "/cancel");
  }

  /** Stop following and watching. */
  close() {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.active?.close();
  }

  /**
   * @param {string} eventsUrl
   * @param {string} messageId
   * @param {string} streamId
   */
  #follow(eventsUrl, messageId, streamId) {
    this.active?.close();
    const stream = new TokenwireStream(new URL(eventsUrl, this.#url).href, {
      transport: this.#options.transport,
      cancel: () => this.cancel(),
    });
    this.active = stream;
    this.activeMessageId = messageId;
    clearTimeout(this.#timer);
    this.dispatchEvent(new CustomEvent("turn", { detail: { stream, messageId, streamId } }));
    stream.finished.then(() => {
      if (this.active !== stream) return;
      this.active = null;
      if (!this.#closed) this.load().catch((error) => this.#failed(error));
    });
    return stream;
  }

  #watch() {
    clearTimeout(this.#timer);
    if (this.#closed || this.active || !this.#options.watchMs) return;
    this.#timer = setTimeout(() => this.load().catch((error) => this.#failed(error)),
                             this.#options.watchMs);
  }

  /** @param {unknown} error */
  #failed(error) {
    this.dispatchEvent(new CustomEvent("error", { detail: error }));
    this.#watch();
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {object} [body]
   */
  async #request(method, path, body) {
    /** @type {Record<string, string>} */
    const headers = {};
    if (this.#options.token) headers.Authorization = `Bearer ${this.#options.token}`;
    if (body) headers["Content-Type"] = "application/json";
    const response = await fetch(this.#url + path, {
      method, headers, body: body ? JSON.stringify(body) : undefined, cache: "no-store",
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = answer.error || { code: "http_" + response.status, message: response.statusText };
      throw Object.assign(new Error(error.message), { code: error.code, status: response.status });
    }
    return answer;
  }
}
