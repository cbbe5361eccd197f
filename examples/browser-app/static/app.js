// Sign in with the app's backend, which returns a short-lived token for this user; then call
// the proxy straight from the browser with it, streaming the answer. The token lives in this
// page's memory only: a reload signs in again.
"use strict";

(function () {
  // {proxyUrl, model}: where the proxy is, from the app's backend (no secret in it).
  var configReady = fetch("/config").then(function (response) {
    return response.json();
  });
  var session = null; // {token, expires_at, user}

  var loginForm = document.getElementById("login");
  var askForm = document.getElementById("ask");
  var nameInput = document.getElementById("name");
  var promptInput = document.getElementById("prompt");
  var who = document.getElementById("who");
  var message = document.getElementById("message");
  var answer = document.getElementById("answer");

  function show(text) {
    message.textContent = text;
    message.hidden = !text;
  }

  function signedOut(text) {
    session = null;
    askForm.hidden = true;
    loginForm.hidden = false;
    show(text);
  }

  // What a person should read for the proxy's {"error": {...}} answer.
  function explain(status, error) {
    var code = (error && error.code) || "";
    if (code === "token_expired") return "Your session has expired. Sign in again to continue.";
    if (status === 401) return "The proxy refused your session (" + error.message + ") Sign in again.";
    if (status === 429) return error.message;
    return (error && error.message) || "The request failed (HTTP " + status + ").";
  }

  async function errorOf(response) {
    try {
      return (await response.json()).error || {};
    } catch (e) {
      return {};
    }
  }

  loginForm.addEventListener("submit", async function (event) {
    event.preventDefault();
    show("");
    var response = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: nameInput.value }),
    });
    if (!response.ok) {
      show(explain(response.status, await errorOf(response)));
      return;
    }
    session = await response.json();
    who.textContent = "Signed in as " + session.user + ".";
    loginForm.hidden = true;
    askForm.hidden = false;
  });

  askForm.addEventListener("submit", async function (event) {
    event.preventDefault();
    show("");
    answer.textContent = "";
    var config = await configReady;
    var response;
    try {
      response = await fetch(config.proxyUrl + "/v1/chat/completions", {
        method: "POST",
        headers: { Authorization: "Bearer " + session.token, "Content-Type": "application/json" },
        body: JSON.stringify({
          model: config.model,
          messages: [{ role: "user", content: promptInput.value }],
          stream: true,
        }),
      });
    } catch (e) {
      show("Could not reach the proxy (" + e.message + ").");
      return;
    }
    if (!response.ok) {
      var error = await errorOf(response);
      if (response.status === 401) signedOut(explain(401, error));
      else show(explain(response.status, error));
      return;
    }
    await readEvents(response.body, function (event) {
      var choice = event.choices && event.choices[0];
      if (choice && choice.delta && choice.delta.content) answer.textContent += choice.delta.content;
      if (event.error) show(event.error.message || "The answer stopped with an error.");
    });
  });

  // Server-sent events: `data: {json}` blocks separated by a blank line, `data: [DONE]` last.
  async function readEvents(stream, onEvent) {
    var reader = stream.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) return;
      buffer += decoder.decode(chunk.value, { stream: true });
      var blocks = buffer.split("\n\n");
      buffer = blocks.pop();
      blocks.forEach(function (block) {
        var data = block.replace(/^data: ?/, "");
        if (data && data !== "[DONE]") onEvent(JSON.parse(data));
      });
    }
  }
})();
