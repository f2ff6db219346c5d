// The demo page: creates a stream through ONE create URL and follows the
// `events_url` the answer carries, with the client every page can use.
import { createStream, TokenwireStream } from "/v1/client.js";

/** Where the page creates streams: a backend that answers like the edge's
 * `POST /v1/streams` (it holds the API key; the page gets a stream token).
 * `tokenwire dev` serves this stand-in. */
const CREATE_URL = "/demo/streams";

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
/** @type {TokenwireStream | null} */
let stream = null;

/** @param {string} message @param {string} [cls] */
function log(message, cls) {
  const line = document.createElement("div");
  line.textContent = new Date().toLocaleTimeString() + "  " + message;
  if (cls) line.className = cls;
  $("log").prepend(line);
}

/** @param {string} message */
function status(message) { $("status").textContent = message; }

function buttons(/** @type {boolean} */ running) {
  /** @type {HTMLButtonElement} */ ($("send")).disabled = running;
  /** @type {HTMLButtonElement} */ ($("cancel")).disabled = !running;
  /** @type {HTMLButtonElement} */ ($("drop")).disabled = !running;
}

/** The cancel URL of a created stream: the answer's own, or next to its events URL. */
function cancelUrlOf(/** @type {Record<string, any>} */ created) {
  return created.cancel_url || created.events_url.replace(/\/events(?=\?|$)/, "/cancel");
}

function follow(/** @type {Record<string, any>} */ created) {
  const current = new TokenwireStream(created.events_url, { cancel: cancelUrlOf(created) });
  stream = current;
  current.addEventListener("text", () => { $("output").textContent = current.text; });
  current.addEventListener("progress", () => {
    if (current.state !== "live") return;
    const p = current.progress;
    status(`streaming: ${p.tokens} tokens, ${p.tokensPerSecond.toFixed(1)} tok/s`);
  });
  current.addEventListener("state", () => {
    const badge = $("state");
    badge.hidden = false;
    badge.textContent = current.state;
    badge.className = current.state;
    if (current.state === "reconnecting") {
      status("connection lost — reconnecting…");
      log("connection lost, resuming after " + current.lastEventId, "drop");
    } else if (current.state === "live") {
      log("connected" + (current.lastEventId ? ", resumed after " + current.lastEventId : ""));
    }
  });
  current.addEventListener("reset", (event) => {
    log("reset (" + /** @type {CustomEvent} */ (event).detail.reason + "): starting over", "drop");
  });
  current.addEventListener("done", () => {
    const d = /** @type {Record<string, any>} */ (current.result);
    status(`done: ${d.finish_reason}, ${d.tokens} tokens, ${d.tokens_per_second} tok/s`);
    log("done, sha256 " + String(d.sha256).slice(0, 12) + "…", "ok");
    buttons(false);
  });
  current.addEventListener("error", () => {
    const e = /** @type {{code: string, message: string}} */ (current.error);
    status("error: " + e.message);
    log("error " + e.code + ": " + e.message, "err");
    buttons(false);
  });
}

$("send").addEventListener("click", async () => {
  stream?.close();
  $("output").textContent = "";
  $("log").textContent = "";
  buttons(true);
  status("sending…");
  try {
    const prompt = /** @type {HTMLTextAreaElement} */ ($("prompt")).value;
    const created = await createStream(CREATE_URL, { prompt, token_scopes: ["read", "cancel"] });
    log("stream " + created.id + " queued");
    follow(created);
  } catch (error) {
    status("error: " + /** @type {Error} */ (error).message);
    buttons(false);
  }
});
$("cancel").addEventListener("click", async () => {
  await stream?.cancel();
  log("cancel requested");
});
$("drop").addEventListener("click", () => {
  if (!stream) return;
  log("dropped the connection at " + stream.lastEventId + "; resuming", "drop");
  stream.reconnect();
});
