// The chat page's logic: stream answers from /v1/chat/completions (fetch + ReadableStream, SSE
// parsed by hand), keep the conversation, and send thumbs up/down to /v1/feedback.
// Every piece of model or user text goes into the DOM through textContent (never parsed as HTML).
"use strict";

const messages = [];  // the conversation, OpenAI format: {role, content}

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = sessionStorage.getItem("llmops-api-key") || "";
keyInput.addEventListener("change", () => sessionStorage.setItem("llmops-api-key", keyInput.value.trim()));

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = keyInput.value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function addTurn(role, text) {
  const div = document.createElement("div");
  div.className = "turn " + role;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  div.appendChild(body);
  $("conversation").appendChild(div);
  return div;
}

function setStatus(text, isError) {
  const s = $("status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

// Yields the parsed JSON of each `data:` event of an SSE response body until [DONE].
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

// `receipt`: the answer's llmops_receipt; the server reads the question, answer and model from it.
function addFeedback(turn, receipt, colour) {
  const bar = document.createElement("div");
  bar.className = "feedback";
  for (const [rating, label] of [["up", "👍"], ["down", "👎"]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb-" + rating;
    button.textContent = label;
    button.title = rating === "up" ? "Good answer" : "Bad answer";
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", async () => {
      for (const b of bar.querySelectorAll("button")) b.disabled = true;
      try {
        const r = await fetch("/v1/feedback", {
          method: "POST", headers: headers(),
          body: JSON.stringify({ receipt, rating, colour }),
        });
        if (!r.ok) throw new Error("feedback failed: HTTP " + r.status);
        button.setAttribute("aria-pressed", "true");
        turn.dataset.feedback = rating;
        setStatus("Thanks for the feedback.");
      } catch (err) {
        for (const b of bar.querySelectorAll("button")) b.disabled = false;
        setStatus(String(err.message || err), true);
      }
    });
    bar.appendChild(button);
  }
  turn.appendChild(bar);
}

async function ask(question) {
  messages.push({ role: "user", content: question });
  addTurn("user", question);
  const turn = addTurn("assistant", "");
  turn.dataset.state = "streaming";
  const text = turn.querySelector(".text");
  $("send").disabled = true;
  setStatus("…");
  let answer = "";
  let model = "";
  let receipt = null;
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(),
      body: JSON.stringify({ messages, stream: true }),
    });
    if (!r.ok) {
      let message = "HTTP " + r.status;
      try { message = (await r.json()).error.message || message; } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    const colour = r.headers.get("x-llmops-colour");
    model = r.headers.get("x-llmops-version") || "";
    for await (const chunk of sseEvents(r)) {
      if (chunk.error) throw new Error(chunk.error.message);
      model = model || chunk.model || "";
      if (chunk.llmops_receipt) receipt = chunk.llmops_receipt;
      for (const choice of chunk.choices || []) {
        const delta = (choice.delta && choice.delta.content) || "";
        if (delta) {
          answer += delta;
          text.textContent = answer;  // textContent: model output is never parsed as HTML
        }
      }
    }
    messages.push({ role: "assistant", content: answer });
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = [model, colour].filter(Boolean).join(" · ");
    turn.appendChild(meta);
    if (receipt) addFeedback(turn, receipt, colour === "blue" || colour === "green" ? colour : null);
    turn.dataset.state = "done";
    setStatus("");
  } catch (err) {
    messages.pop();  // the question had no answer: do not send it as context again
    turn.dataset.state = "error";
    text.textContent = answer;
    setStatus(String(err.message || err), true);
  } finally {
    $("send").disabled = false;
  }
}

$("ask").addEventListener("submit", (event) => {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  $("question").value = "";
  ask(question);
});

$("new-chat").addEventListener("click", () => {
  messages.length = 0;
  $("conversation").replaceChildren();
  setStatus("");
});
