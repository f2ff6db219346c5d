// The demo page: a conversation, with the client every page can use.
// The page never holds the API key: the backend stand-in below creates the
// conversation with it and hands the page a conversation token.
import { TokenwireConversation } from "/v1/client.js";

/** Where the page starts a conversation: a backend that creates it with its API key
 * and answers `{id, token}` (`tokenwire dev` serves this stand-in). */
const START_URL = "/demo/conversations";

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
/** @type {TokenwireConversation | null} */
let chat = null;
/** @type {{text: string, resumed: boolean} | null} the answer being written */
let live = null;

/** @param {string} message @param {string} [cls] */
function log(message, cls) {
  const line = document.createElement("div");
  line.textContent = new Date().toLocaleTimeString() + "  " + message;
  if (cls) line.className = cls;
  $("log").prepend(line);
}

/** @param {string} state @param {string} [detail] */
function show(state, detail = "") {
  $("state").textContent = state;
  $("state").className = state.split(" ")[0];
  $("status").textContent = detail;
}

function buttons() {
  const writing = Boolean(chat?.active);
  /** @type {HTMLButtonElement} */ ($("send")).disabled = writing;
  /** @type {HTMLButtonElement} */ ($("cancel")).disabled = !writing;
  /** @type {HTMLButtonElement} */ ($("drop")).disabled = !writing;
}

/** @param {string} role @param {string} text @param {string} [extra] */
function bubble(role, text, extra = "") {
  const item = document.createElement("li");
  item.className = (role + " " + extra).trim();
  item.textContent = text;
  return item;
}

function render() {
  if (!chat) return;
  const items = chat.messages.map((m) => bubble(m.role, m.content,
    m.status === "cancelled" ? "cancelled" : ""));
  if (live) items.push(bubble("assistant", live.text, "live"));
  $("history").replaceChildren(...items);
  $("history").lastElementChild?.scrollIntoView({ block: "end" });
  buttons();
}

/** @param {{stream: import("/v1/client.js").TokenwireStream, messageId: string}} turn */
function followTurn({ stream }) {
  live = { text: stream.text, resumed: false };
  show("queued", "waiting for a worker…");
  render();
  stream.addEventListener("text", () => {
    if (!live) return;
    live.text = stream.text;
    const item = $("history").querySelector(".live");
    if (item) item.textContent = stream.text;
  });
  stream.addEventListener("progress", () => {
    if (!live || stream.state !== "live" || !stream.progress.tokens) return;
    const p = stream.progress;
    show(live.resumed ? "streaming resumed after a drop" : "streaming",
         `${p.tokens} tokens, ${p.tokensPerSecond.toFixed(1)} tok/s`);
  });
  stream.addEventListener("state", () => {
    if (stream.state === "reconnecting") {
      if (live) live.resumed = true;
      show("reconnecting", "connection lost — resuming from " + stream.lastEventId);
      log("connection lost, resuming after " + stream.lastEventId, "drop");
    } else if (stream.state === "live") {
      log("connected" + (stream.lastEventId ? ", resumed after " + stream.lastEventId : ""));
    }
  });
  stream.addEventListener("reset", (event) => {
    log("reset (" + /** @type {CustomEvent} */ (event).detail.reason + "): starting over", "drop");
  });
  stream.addEventListener("done", () => {
    const d = /** @type {Record<string, any>} */ (stream.result);
    const resumed = live?.resumed ? " — resumed after a drop" : "";
    if (d.finish_reason === "cancelled") show("cancelled", `${d.tokens} tokens kept${resumed}`);
    else show("done", `${d.finish_reason}, ${d.tokens} tokens, ${d.tokens_per_second} tok/s${resumed}`);
    log("answer " + d.finish_reason + ", sha256 " + String(d.sha256).slice(0, 12) + "…", "ok");
    live = null;
  });
  stream.addEventListener("error", () => {
    const e = /** @type {{code: string, message: string}} */ (stream.error);
    show("error", e.message);
    log("error " + e.code + ": " + e.message, "err");
    live = null;
  });
}

async function start() {
  const params = new URLSearchParams(location.hash.slice(1));
  let id = params.get("c");
  let token = params.get("t");
  if (!id || !token) {
    const response = await fetch(START_URL, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
    const created = await response.json();
    if (!response.ok) throw new Error(created.error?.message || "could not start a conversation");
    id = created.id;
    token = created.token;
    history.replaceState(null, "", `#c=${id}&t=${token}`);  // the fragment never reaches a server
  }
  /** @type {HTMLAnchorElement} */ ($("share")).href = location.href;
  chat = new TokenwireConversation(`/v1/conversations/${id}`, { token, watchMs: 1500 });
  chat.addEventListener("history", render);
  chat.addEventListener("turn", (event) => followTurn(/** @type {CustomEvent} */ (event).detail));
  await chat.load();
  log("conversation " + id + (chat.messages.length ? " joined" : " started"));
}

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const prompt = /** @type {HTMLTextAreaElement} */ ($("prompt"));
  if (!chat || !prompt.value.trim()) return;
  try {
    await chat.send(prompt.value);
    prompt.value = "";
  } catch (error) {
    const e = /** @type {Error & {code?: string}} */ (error);
    show("error", e.code === "conversation_busy"
      ? "an answer is being written (maybe in another tab): wait or cancel it" : e.message);
  }
});
$("cancel").addEventListener("click", async () => {
  await chat?.cancel();
  log("cancel requested");
});
$("drop").addEventListener("click", () => {
  const stream = chat?.active;
  if (!stream) return;
  log("dropped the connection at " + stream.lastEventId + "; resuming", "drop");
  stream.reconnect();
});
start().catch((error) => show("error", String(error.message || error)));
