// The edgelm chat page: keeps the conversation, streams answers from /v1/chat/completions (SSE),
// shows reasoning in a collapsible pane, stops a generation, and shows tokens/s. No build step.
"use strict";
const $ = (id) => document.getElementById(id);
let modelId = null;
let history = [];
let controller = null;
// This tab's conversation: the server reuses its KV cache only for the conversation that left it.
const conversation = (self.crypto && crypto.randomUUID) ? crypto.randomUUID()
  : `${Date.now()}-${Math.random().toString(36).slice(2)}`;

// Headers of every API call: JSON, this tab's conversation, and the server's API key once it asked for one.
function headers() {
  const h = { "Content-Type": "application/json", "X-Edgelm-Conversation": conversation };
  const key = sessionStorage.getItem("edgelm-api-key");
  if (key) h["Authorization"] = `Bearer ${key}`;
  return h;
}

// fetch, asking for the API key when the server answers 401 (edgelm serve --api-key), then once more.
async function api(path, options = {}) {
  let r = await fetch(path, { ...options, headers: headers() });
  if (r.status === 401) {
    const key = window.prompt("This server needs its API key (edgelm serve --api-key):");
    if (key) {
      sessionStorage.setItem("edgelm-api-key", key);
      r = await fetch(path, { ...options, headers: headers() });
    }
  }
  return r;
}

async function loadModel() {
  const r = await api("/v1/models");
  if (!r.ok) { bubble("error", (await r.json()).error.message); return; }
  const card = (await r.json()).data[0];
  modelId = card.id;
  $("model").textContent = `${card.id} · ${card.quantization} · context ${card.context_length}`;
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = text || "";
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

function busy(on) {
  $("send").disabled = on;
  $("stop").disabled = !on;
}

// Yields the JSON objects of an SSE body ("data: {...}" events, up to "data: [DONE]").
async function* events(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (!line.startsWith("data: ")) continue;
      const data = line.slice(6);
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

async function ask(text) {
  history.push({ role: "user", content: text });
  bubble("user", text);
  const box = bubble("assistant", "");
  const thoughts = document.createElement("details");
  thoughts.className = "reasoning";
  thoughts.innerHTML = "<summary>Reasoning</summary>";
  const thoughtText = document.createElement("div");
  thoughts.appendChild(thoughtText);
  const answer = document.createElement("div");
  answer.className = "answer";
  box.append(thoughts, answer);
  thoughts.hidden = true;
  controller = new AbortController();
  busy(true);
  let content = "", first = null, usage = null;
  const start = performance.now();
  try {
    const r = await api("/v1/chat/completions", {
      method: "POST",
      body: JSON.stringify({ model: modelId, messages: history, stream: true,
                             stream_options: { include_usage: true } }),
      signal: controller.signal,
    });
    if (!r.ok) throw new Error((await r.json()).error.message);
    for await (const chunk of events(r.body)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      const delta = (chunk.choices[0] || {}).delta || {};
      if (delta.reasoning_content) {
        thoughts.hidden = false;
        thoughtText.textContent += delta.reasoning_content;
      }
      if (delta.content) {
        content += delta.content;
        answer.textContent = content;
      }
      if ((delta.content || delta.reasoning_content) && first === null) first = performance.now();
      $("log").scrollTop = $("log").scrollHeight;
    }
  } catch (err) {
    if (err.name !== "AbortError") bubble("error", String(err.message || err));
  } finally {
    busy(false);
    controller = null;
  }
  history.push({ role: "assistant", content });
  const end = performance.now();
  if (usage && first !== null && usage.completion_tokens > 1) {
    const rate = (usage.completion_tokens - 1) / ((end - first) / 1000);
    $("stats").textContent = `${usage.completion_tokens} tokens · ${rate.toFixed(1)} tok/s · ` +
      `first token ${((first - start) / 1000).toFixed(2)} s`;
  } else {
    $("stats").textContent = "stopped";
  }
  $("stats").dataset.done = "1";
}

$("ask").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  $("stats").dataset.done = "";
  ask(text);
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("ask").requestSubmit(); }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("reset").addEventListener("click", () => { history = []; $("log").innerHTML = ""; $("stats").textContent = ""; });
loadModel();
