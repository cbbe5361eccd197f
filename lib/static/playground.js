// The playground: list the allowed models, stream an answer from POST /api/generate, stop it.
// No framework, no inline code (the page's Content-Security-Policy forbids it). The client key
// lives in this tab's sessionStorage only; it is never written into the page. "Trade the key
// for a short-lived token" swaps it, once, for a token from POST /v1/tokens: the tab then
// keeps only the token, which stops working by itself.
"use strict";

(function () {
  var KEY_STORAGE = "promptgate.clientKey";

  var form = document.getElementById("ask");
  var settings = document.getElementById("settings");
  var keyInput = document.getElementById("key");
  var modelSelect = document.getElementById("model");
  var promptInput = document.getElementById("prompt");
  var maxTokensInput = document.getElementById("max-tokens");
  var sendButton = document.getElementById("send");
  var stopButton = document.getElementById("stop");
  var statusLine = document.getElementById("status");
  var errorBox = document.getElementById("error");
  var answer = document.getElementById("answer");
  var useTokenButton = document.getElementById("use-token");
  var tokenHint = document.getElementById("token-hint");

  var running = null; // the AbortController of the answer being streamed, if any

  function readKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || "";
    } catch (e) {
      return ""; // storage disabled: the key then lives in the field only
    }
  }

  function storeKey(value) {
    try {
      if (value) sessionStorage.setItem(KEY_STORAGE, value);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch (e) {
      /* storage disabled */
    }
  }

  function authHeaders() {
    var key = keyInput.value.trim();
    return key ? { Authorization: "Bearer " + key } : {};
  }

  function setStatus(text) {
    statusLine.textContent = text;
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.textContent = "";
    errorBox.hidden = true;
  }

  // A sentence for a person, from the HTTP status and the proxy's {"error": {...}} object.
  function describeError(status, error, retryAfter) {
    var message = (error && error.message) || "";
    var type = (error && error.type) || "";
    var code = (error && error.code) || "";
    if (status === 401 || type === "authentication_error") {
      if (code === "missing_api_key") return "Enter your client key first.";
      if (code === "token_expired") {
        return "Your short-lived token has expired. Enter the client key again (and trade it for a new token if you like).";
      }
      if (code === "invalid_token") return "The proxy refused the token: " + message;
      return (
        "The proxy refused this client key. Check the key field: it takes one of the " +
        "proxy's client keys, not a Hugging Face token."
      );
    }
    if (status === 429 || type === "rate_limit_error") {
      var wait = retryAfter ? "in " + retryAfter + " s" : "in a moment";
      return "Rate limited: the model is busy or this deployment is over its limit. Try again " + wait + ".";
    }
    if (status === 504 || type === "timeout_error") {
      return "Timed out: the model did not answer in time. Try again, or ask for fewer tokens.";
    }
    if (status === 403 || type === "permission_error") {
      return "This model is not allowed here. " + message;
    }
    if (message) return message;
    return status ? "The proxy answered with HTTP " + status + "." : "Something went wrong.";
  }

  async function errorFrom(response) {
    var error = null;
    try {
      var body = await response.json();
      error = body && body.error;
      if (typeof error === "string") error = { message: error };
    } catch (e) {
      error = null; // not JSON: the status alone speaks
    }
    var text = describeError(response.status, error, response.headers.get("Retry-After"));
    var requestId = response.headers.get("X-Request-ID");
    // The id finds the request in the server's log, for whoever runs the proxy.
    return requestId ? text + " (request id " + requestId + ")" : text;
  }

  async function loadModels() {
    clearError();
    storeKey(keyInput.value.trim());
    setStatus("Loading the models…");
    try {
      var response = await fetch("v1/models", { headers: authHeaders() });
      if (!response.ok) {
        showError(await errorFrom(response));
        setStatus("");
        return;
      }
      var body = await response.json();
      // Embedding models cannot answer a prompt; models of unknown task are offered.
      var ids = (body.data || [])
        .filter(function (model) {
          return model.task !== "feature-extraction";
        })
        .map(function (model) {
          return model.id;
        });
      modelSelect.replaceChildren();
      ids.forEach(function (id) {
        modelSelect.append(new Option(id, id));
      });
      modelSelect.disabled = ids.length === 0;
      setStatus(ids.length === 1 ? "1 model available." : ids.length + " models available.");
    } catch (e) {
      showError("Could not reach the proxy: " + e.message);
      setStatus("");
    }
  }

  function setRunning(controller) {
    running = controller;
    sendButton.disabled = controller !== null;
    stopButton.disabled = controller === null;
  }

  function requestBody() {
    var body = { prompt: promptInput.value, stream: true };
    if (modelSelect.value) body.model = modelSelect.value;
    var maxTokens = parseInt(maxTokensInput.value, 10);
    if (maxTokens > 0) body.max_tokens = maxTokens;
    return body;
  }

  async function send() {
    if (running) return;
    if (!promptInput.value.trim()) {
      showError("Type a prompt first.");
      promptInput.focus();
      return;
    }
    clearError();
    answer.replaceChildren();
    setStatus("Waiting for the model…");
    var controller = new AbortController();
    setRunning(controller);
    try {
      var response = await fetch("api/generate", {
        method: "POST",
        headers: Object.assign(
          { "Content-Type": "application/json", Accept: "text/event-stream" },
          authHeaders()
        ),
        body: JSON.stringify(requestBody()),
        signal: controller.signal,
      });
      if (!response.ok) {
        showError(await errorFrom(response));
        setStatus("Failed (HTTP " + response.status + ").");
        return;
      }
      setStatus("Streaming…");
      await readEvents(response.body);
    } catch (e) {
      if (e.name === "AbortError") {
        setStatus("Stopped.");
      } else {
        showError("Could not reach the proxy: " + e.message);
        setStatus("Failed.");
      }
    } finally {
      setRunning(null);
    }
  }

  // Reads `data: {...}` server-sent events: text deltas, a closing event, then [DONE].
  async function readEvents(stream) {
    var reader = stream.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    var closing = null;
    var done = false;
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n/g, "\n");
      var end;
      while ((end = buffer.indexOf("\n\n")) !== -1) {
        var data = eventData(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (data === null) continue;
        if (data === "[DONE]") {
          done = true;
          continue;
        }
        var event;
        try {
          event = JSON.parse(data);
        } catch (e) {
          throw new Error("the proxy sent an event that is not JSON");
        }
        if (event.error) {
          showError(describeError(0, event.error, null));
          setStatus("Broken off by an error.");
          return;
        }
        if (event.text) answer.append(document.createTextNode(event.text));
        if ("finish_reason" in event) closing = event;
      }
    }
    if (!done) {
      showError("The answer was cut off: the stream ended before it was complete.");
      setStatus("Incomplete.");
      return;
    }
    setStatus(summary(closing));
  }

  function eventData(block) {
    var lines = block.split("\n").filter(function (line) {
      return line.indexOf("data:") === 0;
    });
    if (lines.length === 0) return null;
    return lines
      .map(function (line) {
        return line.slice(5).replace(/^ /, "");
      })
      .join("\n");
  }

  function summary(closing) {
    var parts = ["Done"];
    if (closing && closing.finish_reason) parts.push("finish: " + closing.finish_reason);
    var usage = closing && closing.usage;
    if (usage && usage.completion_tokens != null) parts.push(usage.completion_tokens + " tokens");
    return parts.join(" · ") + ".";
  }

  function stop() {
    if (running) running.abort();
  }

  // Trade the key in the field for a token naming this playground; keep only the token.
  async function useToken() {
    clearError();
    if (!keyInput.value.trim()) {
      showError("Enter your client key first.");
      return;
    }
    setStatus("Trading the key for a token…");
    try {
      var response = await fetch("v1/tokens", {
        method: "POST",
        headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
        body: JSON.stringify({ user: "playground" }),
      });
      if (!response.ok) {
        showError(await errorFrom(response));
        setStatus("");
        return;
      }
      var minted = await response.json();
      keyInput.value = minted.token;
      storeKey(minted.token); // the key itself is no longer kept anywhere in this tab
      var until = new Date(minted.expires_at * 1000).toLocaleTimeString();
      tokenHint.textContent = "This tab now holds a token valid until " + until + ", not the key.";
      setStatus("Using a short-lived token.");
    } catch (e) {
      showError("Could not reach the proxy: " + e.message);
      setStatus("");
    }
  }

  settings.addEventListener("submit", function (event) {
    event.preventDefault();
    loadModels();
  });
  keyInput.addEventListener("change", function () {
    storeKey(keyInput.value.trim());
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    send();
  });
  promptInput.addEventListener("keydown", function (event) {
    // Enter and Ctrl/Cmd+Enter send; Shift+Enter is a new line; IME composition is left alone.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && running) stop();
  });
  stopButton.addEventListener("click", stop);
  useTokenButton.addEventListener("click", useToken);

  keyInput.value = readKey();
  if (keyInput.value) loadModels();
})();
