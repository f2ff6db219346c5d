// The AI SDK's own client code — AbstractChat (what useChat wraps), DefaultChatTransport,
// readUIMessageStream — against two Tokenwire edges, in Node (no browser, no React).
//
//   node use_chat.mjs <ai-v6|ai-v7> <edge1 URL> <edge2 URL> <chat id> <conversation token>
//
// Prints one JSON object with what a user would look at; the Python test
// (tests/integration/test_ai_sdk.py) compares it with the conversation's history.
const [pkg, edge1, edge2, chatId, token] = process.argv.slice(2);
const { AbstractChat, DefaultChatTransport, readUIMessageStream } = await import(pkg);

/** useChat's state without React: plain fields (what AbstractChat needs). */
class NodeChatState {
  constructor() {
    this.status = "ready";
    this.error = undefined;
    this.messages = [];
  }
  pushMessage(message) { this.messages = [...this.messages, message]; }
  popMessage() { this.messages = this.messages.slice(0, -1); }
  replaceMessage(index, message) {
    this.messages = this.messages.map((m, i) => (i === index ? message : m));
  }
  snapshot(thing) { return structuredClone(thing); }
}

class Chat extends AbstractChat {
  constructor(init) { super({ ...init, state: new NodeChatState() }); }
}

// A load balancer in front of the edges: requests go to `current`; `dropAfter`
// chunks into the next chat response, the connection breaks (a network drop).
const balancer = { current: edge1, dropAfter: 0 };
async function balancedFetch(input, init) {
  const url = new URL(typeof input === "string" ? input : input.url);
  const target = new URL(url.pathname + url.search, balancer.current);
  const response = await fetch(target, init);
  if (!balancer.dropAfter || init?.method !== "POST" || !response.body) return response;
  let left = balancer.dropAfter;
  balancer.dropAfter = 0;
  const reader = response.body.getReader();
  const body = new ReadableStream({
    async pull(controller) {
      if (left-- <= 0) {
        await reader.cancel();
        controller.error(new TypeError("fetch failed: network connection lost"));
        return;
      }
      const { done, value } = await reader.read();
      if (done) controller.close(); else controller.enqueue(value);
    },
  });
  return new Response(body, { status: response.status, headers: response.headers });
}

const transport = new DefaultChatTransport({
  api: "http://balancer.invalid/v1/ui/chat",
  headers: { Authorization: `Bearer ${token}` },  // a conversation token, never the API key
  body: { max_tokens: 40 },
  fetch: balancedFetch,
});
const errors = [];
const chat = new Chat({ id: chatId, transport, onError: (error) => errors.push(String(error)) });
const texts = (message) => message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
const result = {};

// 1. a whole turn
await chat.sendMessage({ text: "What is a resumable stream?" });
result.afterFirst = { status: chat.status, count: chat.messages.length };

// 2. the connection drops mid-answer; resumeStream() on the other edge
balancer.dropAfter = 3;
await chat.sendMessage({ text: "And why does it matter?" });
result.afterDrop = { status: chat.status, partial: texts(chat.lastMessage),
                     lastRole: chat.lastMessage.role, errors: [...errors] };
balancer.current = edge2;
chat.clearError();
await chat.resumeStream();
result.afterResume = { status: chat.status };

// 3. nothing active: the resume URL answers 204 and resumeStream() changes nothing
const idle = await fetch(`${edge1}/v1/ui/chat/${chatId}/stream`,
                         { headers: { Authorization: `Bearer ${token}` } });
result.idleStatus = idle.status;
const before = JSON.stringify(chat.messages);
await chat.resumeStream();
result.idleUnchanged = JSON.stringify(chat.messages) === before && chat.status === "ready";

// 4. a turn started elsewhere (over REST), read with readUIMessageStream
const posted = await (await fetch(`${edge1}/v1/conversations/${chatId}/messages`, {
  method: "POST", body: JSON.stringify({ content: "One more thing", max_tokens: 40 }),
  headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
})).json();
const stream = await transport.reconnectToStream({ chatId });
let last = null;
for await (const message of readUIMessageStream({ stream })) last = message;
result.read = { messageId: last.id, text: texts(last), expectedId: posted.message_id };

result.messages = chat.messages.map((m) => ({ id: m.id, role: m.role, text: texts(m) }));
result.errors = errors;
process.stdout.write(JSON.stringify(result) + "\n");
