/*
 * Customer-service chat widget. A host page adds one tag:
 *   <script src="https://HOST/static/widget.js" data-site-key="pk_..."></script>
 * (plus, optionally, data-visitor-token="..." signed by the site's server: README)
 * and gets a launcher button and chat panel inside a shadow root (no global CSS either way),
 * talking to wss://HOST/ws/chat/ with protocol v1 (docs/protocol.md). No framework, no CDN.
 *
 * Safety: every piece of text from the network or the customer is put on the page with
 * textContent, never innerHTML, so no HTML or script in a message is ever interpreted.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || !script.dataset.siteKey) {
    console.error("chat widget: the script tag needs data-site-key");
    return;
  }
  var SITE_KEY = script.dataset.siteKey;
  // Optional: the site's signature of its logged-in customer (README, "Embedding the widget").
  var VISITOR_TOKEN = script.dataset.visitorToken || null;
  var SERVER = new URL(script.src, window.location.href);
  var WS_URL = (SERVER.protocol === "https:" ? "wss://" : "ws://") + SERVER.host + "/ws/chat/";
  var STORE_KEY = "cs-widget:" + SITE_KEY;
  var KEPT_MESSAGES = 50; // what a returning customer sees again after a page load
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 15000; // a long outage: retry every 15 s, never hammer the server
  var PROTOCOL_VERSION = 1;
  // Keeps the socket counted as live on the server (it forgets silent ones after 10 min) and
  // stops proxies from closing an idle connection.
  var PING_EVERY_MS = 240000;
  // A message the server failed to handle on its side (internal_error naming it) is sent again
  // with the same id (stored and answered once), a few times, backing off; then it is given
  // back to the customer like a refused one.
  var RETRY_LIMIT = 3;
  var RETRY_BASE_MS = 1000;
  // A hello refused with one of these will be refused again however often it is sent (the key,
  // the page's origin or the protocol version is wrong): the widget shows the error and stops
  // reconnecting until the page is loaded again. Any other refusal (rate_limited,
  // internal_error...) passes: the socket is closed and the reconnect's backoff tries again.
  var HELLO_REFUSED_FOR_GOOD = ["unknown_site", "origin_not_allowed", "unsupported_version",
                                "bad_field"];

  var STYLE = [
    // !important: a host page rule that matches our host element (`*`, `div`) would otherwise
    // beat :host and pass inherited styles (letter-spacing, line-height...) into the widget.
    ":host{all:initial !important}",
    "*{box-sizing:border-box;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}",
    ".launcher{position:fixed;right:20px;bottom:20px;width:60px;height:60px;border-radius:50%;",
    "border:none;background:#1f5fbf;color:#fff;font-size:26px;cursor:pointer;",
    "box-shadow:0 4px 14px rgba(0,0,0,.25);z-index:2147483000}",
    ".launcher:focus-visible,button:focus-visible,textarea:focus-visible{outline:3px solid #f5a623;",
    "outline-offset:2px}",
    ".panel{position:fixed;right:20px;bottom:92px;width:370px;height:560px;max-height:calc(100vh - 110px);",
    "display:flex;flex-direction:column;background:#fff;color:#1b1b1b;border-radius:14px;",
    "box-shadow:0 10px 40px rgba(0,0,0,.28);overflow:hidden;z-index:2147483000;font-size:15px}",
    ".panel[hidden]{display:none}",
    "header{display:flex;align-items:center;gap:8px;padding:12px 14px;background:#1f5fbf;color:#fff}",
    "header h2{flex:1;margin:0;font-size:16px;font-weight:600}",
    "header button{background:rgba(255,255,255,.15);color:#fff;border:none;border-radius:6px;",
    "padding:6px 9px;cursor:pointer;font-size:13px}",
    "header button:disabled{cursor:default;background:transparent;border:1px solid rgba(255,255,255,.4)}",
    ".status{font-size:12px;padding:3px 14px;background:#fff4d6;color:#6b4e00}",
    ".status[hidden]{display:none}",
    ".log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;",
    "background:#f6f7f9}",
    ".msg{max-width:85%;padding:9px 12px;border-radius:12px;line-height:1.4;white-space:pre-wrap;",
    "word-wrap:break-word;overflow-wrap:anywhere}",
    ".msg.customer{align-self:flex-end;background:#1f5fbf;color:#fff;border-bottom-right-radius:3px}",
    ".msg.assistant{align-self:flex-start;background:#fff;border:1px solid #dde1e6;",
    "border-bottom-left-radius:3px}",
    ".msg.notice{align-self:center;background:#fdecea;color:#8a1c12;font-size:13px}",
    ".meta{display:flex;gap:6px;align-items:center;margin-top:6px;font-size:12px;color:#5f6773}",
    ".meta button{border:1px solid #cfd5dc;background:#fff;border-radius:6px;cursor:pointer;",
    "padding:2px 7px;font-size:13px}",
    ".meta button[aria-pressed=true]{background:#e3edfb;border-color:#1f5fbf}",
    ".demo-tag{display:inline-block;margin-top:6px;padding:1px 6px;border-radius:4px;font-size:11px;",
    "background:#fff4d6;color:#7a5200;border:1px solid #f0d48a}",
    ".suggestions{display:flex;flex-direction:column;gap:4px;margin-top:6px}",
    ".suggestions details{background:#f0f4fa;border-radius:8px;padding:4px 8px}",
    ".suggestions summary{cursor:pointer}",
    ".chips{align-self:flex-start;display:flex;flex-wrap:wrap;gap:6px;max-width:90%}",
    ".chips .label{width:100%;font-size:12px;color:#5f6773}",
    ".chips button{border:1px solid #1f5fbf;color:#1f5fbf;background:#fff;border-radius:14px;",
    "padding:5px 10px;cursor:pointer;font-size:13px;text-align:left}",
    ".chips button.none{border-color:#cfd5dc;color:#5f6773}",
    ".chips button[aria-pressed=true]{background:#1f5fbf;color:#fff}",
    ".chips button:disabled{cursor:default;opacity:.7}",
    ".typing{align-self:flex-start;color:#5f6773;font-size:13px;padding:2px 6px}",
    ".typing[hidden]{display:none}",
    ".quick{display:flex;flex-wrap:wrap;gap:6px;padding:8px 12px 0;background:#fff}",
    ".quick button{border:1px solid #1f5fbf;color:#1f5fbf;background:#fff;border-radius:14px;",
    "padding:5px 10px;cursor:pointer;font-size:13px}",
    "form{display:flex;gap:8px;padding:10px 12px;background:#fff;border-top:1px solid #e3e6ea}",
    "textarea{flex:1;resize:none;border:1px solid #cfd5dc;border-radius:8px;padding:8px;",
    "font-size:15px;height:42px}",
    "form button{border:none;background:#1f5fbf;color:#fff;border-radius:8px;padding:0 14px;",
    "cursor:pointer;font-size:15px}",
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}",
    "@media (max-width:480px){.panel{right:0;bottom:0;width:100vw;height:100vh;max-height:100vh;",
    "border-radius:0}.launcher{right:14px;bottom:14px}.launcher[aria-expanded=true]{display:none}}",
    ".launcher svg{width:28px;height:28px;fill:#fff;vertical-align:middle}",
    // Human agents: their messages, and the e-mail and rating forms shown in the log.
    ".msg.agent{align-self:flex-start;background:#e3f4e6;border:1px solid #b9dfc0;",
    "border-bottom-left-radius:3px}",
    ".msg .who{display:block;font-size:12px;color:#1e5e2b;font-weight:600;margin-bottom:2px}",
    ".msg.info{align-self:center;background:#eef0f3;color:#333;font-size:13px}",
    ".inline-form{align-self:stretch;display:flex;flex-wrap:wrap;gap:6px;padding:8px;",
    "background:#fff;border:1px solid #dde1e6;border-radius:10px;font-size:13px}",
    ".inline-form p{margin:0;flex-basis:100%}",
    ".inline-form input,.inline-form textarea{flex:1;border:1px solid #cfd5dc;border-radius:6px;",
    "padding:6px;font-size:14px}",
    ".inline-form button{border:1px solid #1f5fbf;background:#fff;color:#1f5fbf;border-radius:6px;",
    "padding:4px 9px;cursor:pointer}",
    ".inline-form button[aria-pressed=true]{background:#1f5fbf;color:#fff}",
  ].join("");

  // --- persistent state (localStorage) -------------------------------------------------------

  function loadState() {
    try {
      var saved = JSON.parse(window.localStorage.getItem(STORE_KEY) || "null");
      if (saved && typeof saved === "object") return saved;
    } catch (err) {
      console.warn("chat widget: stored conversation unreadable, starting afresh", err);
    }
    return { conversationId: null, visitorId: null, messages: [], outbox: [], open: false };
  }
  var state = loadState();
  state.messages = state.messages || [];
  state.outbox = state.outbox || [];
  if (!state.visitorId) state.visitorId = "v_" + randomId();

  function saveState() {
    state.messages = state.messages.slice(-KEPT_MESSAGES);
    try {
      window.localStorage.setItem(STORE_KEY, JSON.stringify(state));
    } catch (err) {
      console.warn("chat widget: cannot keep the conversation across page loads", err);
    }
  }

  function randomId() {
    var bytes = new Uint8Array(12);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) {
      return ("0" + b.toString(16)).slice(-2);
    }).join("");
  }

  // --- DOM -----------------------------------------------------------------------------------

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      node.setAttribute(name, attrs[name]);
    });
    if (text !== undefined) node.textContent = text; // text only, never markup
    return node;
  }

  var host = el("div", { id: "cs-chat-widget" });
  document.body.appendChild(host);
  var root = host.attachShadow({ mode: "open" });
  root.appendChild(el("style", {}, STYLE));

  var launcher = el("button", {
    class: "launcher", type: "button", "aria-label": "Open chat", "aria-expanded": "false",
    "aria-controls": "cs-panel",
  });
  launcher.appendChild(chatIcon());
  var panel = el("section", {
    class: "panel", id: "cs-panel", role: "dialog", "aria-label": "Customer service chat",
  });
  panel.hidden = true;
  var header = el("header");
  header.appendChild(el("h2", {}, "Customer service"));
  var humanButton = el("button", { type: "button", class: "human" }, "Talk to a human");
  var closeButton = el("button", { type: "button", "aria-label": "Close chat" }, "\u2715");
  header.appendChild(humanButton);
  header.appendChild(closeButton);
  var statusBar = el("div", { class: "status", role: "status" });
  statusBar.hidden = true;
  var log = el("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": "Messages" });
  var typing = el("div", { class: "typing", "aria-live": "polite" }, "Assistant is typing\u2026");
  typing.hidden = true;
  var quick = el("div", { class: "quick", role: "group", "aria-label": "Common questions" });
  var form = el("form", { "aria-label": "Send a message" });
  var inputLabel = el("label", { for: "cs-input", class: "sr" }, "Your message");
  var input = el("textarea", { id: "cs-input", rows: "1", placeholder: "Type your question\u2026" });
  var sendButton = el("button", { type: "submit" }, "Send");
  form.appendChild(inputLabel);
  form.appendChild(input);
  form.appendChild(sendButton);
  [header, statusBar, log, quick, form].forEach(function (n) { panel.appendChild(n); });
  root.appendChild(panel);
  root.appendChild(launcher);

  function chatIcon() {
    // A speech bubble drawn as SVG: emoji fonts are not on every machine.
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    var path = document.createElementNS(ns, "path");
    path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z");
    svg.appendChild(path);
    return svg;
  }

  var bubbles = {}; // message id -> bubble element, so re-sent answers replace, not duplicate

  function scrollDown() {
    log.scrollTop = log.scrollHeight;
  }

  function renderMessage(msg) {
    if (msg.role === "suggestions") {
      renderSuggestions(msg);
      return;
    }
    var bubble = bubbles[msg.id];
    if (!bubble) {
      bubble = el("div", { class: "msg " + msg.role, "data-id": msg.id });
      log.insertBefore(bubble, typing.parentNode === log ? typing : null);
      bubbles[msg.id] = bubble;
    }
    bubble.textContent = "";
    if (msg.role === "agent") bubble.appendChild(el("span", { class: "who" }, msg.agentName));
    bubble.appendChild(el("span", { class: "text" }, msg.text));
    if (msg.suggestions && msg.suggestions.length) {
      var list = el("div", { class: "suggestions" });
      msg.suggestions.forEach(function (s) {
        var details = el("details");
        details.appendChild(el("summary", {}, s.question));
        details.appendChild(el("div", {}, s.answer));
        list.appendChild(details);
      });
      bubble.appendChild(list);
    }
    if (msg.demo) {
      // The platform runs the offline demo model (random weights): its text is placeholder.
      bubble.appendChild(el("div", { class: "demo-tag", title: "This platform runs a demo " +
        "model with random weights; its answers are placeholder text." },
        "demo model: random weights, not a real answer"));
    }
    if (msg.role === "assistant" && msg.done && msg.source !== "fallback") {
      bubble.appendChild(feedbackBar(msg));
    }
    scrollDown();
  }

  // "Did you mean": FAQs the server suggests for a question the cache missed. One click answers
  // with the FAQ (the server stops the model's answer); "None of these" lets the model answer
  // a question that waits for the customer (the site's suggest_first policy).
  function renderSuggestions(msg) {
    var box = bubbles[msg.id];
    if (!box) {
      box = el("div", { class: "chips", role: "group", "aria-label": "Related answers",
                        "data-id": msg.id });
      log.insertBefore(box, typing.parentNode === log ? typing : null);
      bubbles[msg.id] = box;
    }
    box.textContent = "";
    box.appendChild(el("span", { class: "label" }, "Related answers"));
    var decided = msg.chosen != null || msg.declined;
    msg.items.forEach(function (item) {
      var chip = el("button", { type: "button", "aria-pressed": String(msg.chosen === item.faq_id) },
                    item.question);
      chip.disabled = decided;
      chip.addEventListener("click", function () { chooseSuggestion(msg, item.faq_id); });
      box.appendChild(chip);
    });
    var none = el("button", { type: "button", class: "none", "aria-pressed": String(!!msg.declined) },
                  "None of these");
    none.disabled = decided;
    none.addEventListener("click", function () { declineSuggestions(msg); });
    box.appendChild(none);
    scrollDown();
  }

  function chooseSuggestion(msg, faqId) {
    if (!send({ type: "choose_suggestion", message_id: msg.reply_to, faq_id: faqId })) {
      notice("Not connected; try again in a moment.");
      return;
    }
    msg.chosen = faqId;
    upsert(msg);
  }

  function declineSuggestions(msg) {
    if (!send({ type: "decline_suggestions", message_id: msg.reply_to })) {
      notice("Not connected; try again in a moment.");
      return;
    }
    msg.declined = true;
    upsert(msg);
    if (msg.waiting) setTyping(true); // the model answers now
  }

  function feedbackBar(msg) {
    var bar = el("div", { class: "meta" });
    bar.appendChild(el("span", {}, "Helpful?"));
    var up = el("button", { type: "button", "aria-label": "Helpful", "aria-pressed": String(msg.feedback === "up") }, "Yes");
    var down = el("button", { type: "button", "aria-label": "Not helpful", "aria-pressed": String(msg.feedback === "down") }, "No");
    [[up, "up"], [down, "down"]].forEach(function (pair) {
      pair[0].addEventListener("click", function () {
        // Shown as pressed only once it went out: a click while disconnected is not recorded.
        if (!send({ type: "feedback", message_id: msg.id, value: pair[1] })) {
          notice("Not connected; your feedback was not sent. Try again in a moment.");
          return;
        }
        msg.feedback = pair[1];
        saveState();
        up.setAttribute("aria-pressed", String(pair[1] === "up"));
        down.setAttribute("aria-pressed", String(pair[1] === "down"));
      });
    });
    bar.appendChild(up);
    bar.appendChild(down);
    return bar;
  }

  function upsert(msg) {
    var existing = null;
    for (var i = 0; i < state.messages.length; i++) {
      if (state.messages[i].id === msg.id) existing = state.messages[i];
    }
    if (existing) {
      Object.keys(msg).forEach(function (k) { existing[k] = msg[k]; });
      msg = existing;
    } else {
      state.messages.push(msg);
    }
    saveState();
    renderMessage(msg);
    return msg;
  }

  function removeMessage(id) {
    state.messages = state.messages.filter(function (m) { return m.id !== id; });
    saveState();
    var bubble = bubbles[id];
    if (bubble && bubble.parentNode) bubble.parentNode.removeChild(bubble);
    delete bubbles[id];
  }

  function notice(text) {
    var bubble = el("div", { class: "msg notice", role: "alert" }, text);
    log.appendChild(bubble);
    scrollDown();
  }

  function setStatus(text) {
    statusBar.textContent = text || "";
    statusBar.hidden = !text;
  }

  function setTyping(on) {
    typing.hidden = !on;
    if (on) {
      log.appendChild(typing);
      scrollDown();
    }
  }

  function renderQuickReplies(replies) {
    quick.textContent = "";
    (replies || []).forEach(function (r) {
      var b = el("button", { type: "button" }, r.question);
      b.addEventListener("click", function () { ask(r.question); });
      quick.appendChild(b);
    });
  }

  // --- connection --------------------------------------------------------------------------

  var socket = null;
  var ready = false; // welcome received
  var refused = false; // the hello was refused for good: no more reconnects (see above)
  var attempts = 0;
  var streaming = {}; // answer id -> text so far
  var answerOf = {}; // question id -> id of the answer being streamed to it
  var demoModel = false; // welcome.demo_model: model answers come from the offline demo model

  function connect() {
    socket = new WebSocket(WS_URL);
    socket.addEventListener("open", function () {
      var hello = { type: "hello", v: PROTOCOL_VERSION, site_key: SITE_KEY,
                    conversation_id: state.conversationId, visitor_id: state.visitorId };
      if (VISITOR_TOKEN) hello.visitor_token = VISITOR_TOKEN;
      send(hello, true);
    });
    socket.addEventListener("message", function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (err) { return; }
      handle(frame);
    });
    socket.addEventListener("close", function () {
      ready = false;
      if (refused) {
        setStatus("Chat unavailable");
        // Nothing typed now could be sent: say so in the input instead of queueing it.
        input.disabled = true;
        sendButton.disabled = true;
        quick.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
        input.placeholder = "Chat unavailable on this page";
        return;
      }
      var delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempts));
      delay = delay / 2 + Math.random() * delay / 2; // jitter: clients don't return in lockstep
      attempts += 1;
      setStatus("Reconnecting\u2026");
      window.setTimeout(connect, delay);
    });
  }

  function send(frame, force) {
    if (socket && socket.readyState === WebSocket.OPEN && (ready || force)) {
      socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function flushOutbox() {
    state.outbox.forEach(sendQueued);
  }

  function sendQueued(item) {
    send({ type: "message", client_message_id: item.cid, text: item.text });
  }

  function outboxItem(cid) {
    for (var i = 0; i < state.outbox.length; i++) {
      if (state.outbox[i].cid === cid) return state.outbox[i];
    }
    return null;
  }

  // The server refused a message (too long, too fast...): it was not stored. Take it back out
  // of the chat and give its text back to the customer to edit or send again later.
  function giveBack(cid) {
    var item = outboxItem(cid);
    state.outbox = state.outbox.filter(function (o) { return o.cid !== cid; });
    removeMessage(cid);
    setTyping(false);
    if (item) input.value = input.value ? item.text + "\n" + input.value : item.text;
  }

  function retryLater(cid) {
    var item = outboxItem(cid);
    if (!item) return false;
    item.tries = (item.tries || 0) + 1;
    saveState();
    if (item.tries > RETRY_LIMIT) return false;
    window.setTimeout(function () {
      if (outboxItem(cid)) sendQueued(item); // unless acked meanwhile (e.g. after a reconnect)
    }, RETRY_BASE_MS * Math.pow(2, item.tries - 1));
    return true;
  }

  // An error before the welcome answers the hello (or refuses the socket): the socket is of no
  // use until a hello succeeds. Close it, so that the reconnect (with its growing backoff) says
  // hello again on a new one, unless the refusal is for good.
  function helloRefused(frame) {
    if (HELLO_REFUSED_FOR_GOOD.indexOf(frame.code) !== -1) {
      refused = true;
      notice(frame.message + " (" + frame.code + ")");
    }
    socket.close();
  }

  function handleError(frame) {
    if (!ready) {
      helloRefused(frame);
      return;
    }
    if (frame.reply_to) {
      // An answer failed or timed out (the question itself is stored): stop waiting for it.
      // No answer follows (docs/protocol.md), so text streamed so far is taken away.
      setTyping(false);
      var partial = answerOf[frame.reply_to];
      delete answerOf[frame.reply_to];
      if (partial && streaming[partial] !== undefined) {
        delete streaming[partial];
        removeMessage(partial);
      }
    } else if (frame.ref && outboxItem(frame.ref)) {
      // Not acked yet. A failure on the server's side is retried (a resend of a message that
      // was stored after all is answered once); any other error refused it: give it back.
      if (frame.code === "internal_error" && retryLater(frame.ref)) return;
      giveBack(frame.ref);
    }
    notice(frame.message + " (" + frame.code + ")");
    if (frame.code === "unknown_site" || frame.code === "origin_not_allowed") {
      // The site was switched off (or stopped allowing this page) while the chat was open:
      // every later message would be refused too. Stop, as for a hello refused for good.
      refused = true;
      socket.close();
    }
  }

  function handle(frame) {
    if (handleAgentFrame(frame)) {
      updateHumanButton();
      return;
    }
    switch (frame.type) {
      case "welcome":
        ready = true;
        attempts = 0;
        demoModel = frame.demo_model === true;
        setStatus("");
        if (state.conversationId !== frame.conversation_id) {
          state.conversationId = frame.conversation_id;
          if (!frame.resumed) {
            // A new conversation (the old one is gone): keep only what is still to be sent.
            state.messages = state.messages.filter(function (m) { return isQueued(m.id); });
            log.textContent = "";
            bubbles = {};
            state.messages.forEach(renderMessage);
          }
          saveState();
        }
        if (!state.messages.some(function (m) { return m.id === "greeting"; })) {
          upsert({ id: "greeting", role: "assistant", text: frame.greeting, done: true, source: "fallback" });
        }
        renderQuickReplies(frame.quick_replies);
        if (frame.max_message_chars) input.maxLength = frame.max_message_chars;
        restoreHandoff(frame.handoff);
        flushOutbox();
        break;
      case "ack":
        state.outbox = state.outbox.filter(function (o) { return o.cid !== frame.client_message_id; });
        saveState();
        break;
      case "answer":
        setTyping(false);
        upsert({ id: frame.message_id, role: "assistant", text: frame.text, source: frame.source, done: true,
                 demo: demoModel && frame.source === "llm" });
        break;
      case "holding":
        upsert({ id: frame.message_id, role: "assistant", text: frame.text, source: "fallback",
                 suggestions: frame.suggestions, done: true });
        setTyping(true);
        break;
      case "suggestions":
        var shown = upsert({ id: "suggestions:" + frame.reply_to, role: "suggestions",
                             reply_to: frame.reply_to, items: frame.suggestions,
                             waiting: frame.waiting });
        if (frame.waiting && shown.chosen == null && !shown.declined) setTyping(false);
        break;
      case "answer.start":
        // A second start of the same answer: it was restarted (a worker or the model server
        // failed mid-answer); the text streamed so far is dropped, the new stream replaces it.
        if (streaming[frame.message_id] !== undefined) {
          delete streaming[frame.message_id];
          removeMessage(frame.message_id);
        }
        answerOf[frame.reply_to] = frame.message_id;
        setTyping(true);
        break;
      case "answer.delta":
        answerOf[frame.reply_to] = frame.message_id;
        streaming[frame.message_id] = (streaming[frame.message_id] || "") + frame.text;
        upsert({ id: frame.message_id, role: "assistant", text: streaming[frame.message_id], source: "llm", done: false,
                 demo: demoModel });
        break;
      case "answer.end":
        setTyping(false);
        delete streaming[frame.message_id];
        delete answerOf[frame.reply_to];
        upsert({ id: frame.message_id, role: "assistant", text: frame.text, source: "llm", done: true,
                 demo: demoModel });
        break;
      case "error":
        handleError(frame);
        break;
      default:
        break; // feedback.ok, pong: nothing to show
    }
  }

  function isQueued(id) {
    return state.outbox.some(function (o) { return o.cid === id; });
  }

  function ask(text) {
    text = (text || "").trim();
    if (!text) return;
    var cid = "c_" + randomId();
    state.outbox.push({ cid: cid, text: text });
    upsert({ id: cid, role: "customer", text: text, done: true });
    send({ type: "message", client_message_id: cid, text: text });
    // While an agent holds the chat, the bot does not answer: no "Assistant is typing".
    if (!handoff.agentName) setTyping(true);
  }

  // --- human agents (docs/protocol.md: handoff frames) -----------------------------------------

  // The conversation's handoff as the server last described it; agentName is set while an
  // agent holds the chat. Restored from the welcome's `handoff` after a reload or reconnect.
  var handoff = { status: null, agentName: "" };
  var forms = {}; // the e-mail and rating forms on show, by kind, so none is shown twice
  var agentTypingTimer = null;

  function info(text) {
    log.appendChild(el("div", { class: "msg info", role: "status" }, text));
    scrollDown();
  }

  function setAgent(name) {
    handoff.agentName = name || "";
    typing.textContent = name ? name + " is typing\u2026" : "Assistant is typing\u2026";
    if (name) setTyping(false);
  }

  function waitingText(h) {
    return "A person from our team has been asked to join; they will reply here" +
      (h.reply_within_minutes ? " (usually within " + h.reply_within_minutes + " minutes)." : ".");
  }

  function restoreHandoff(h) {
    handoff.status = h ? h.status : null;
    setAgent(h && h.status === "held" ? h.agent_name : "");
    updateHumanButton();
    if (!h) return;
    if (h.status === "waiting" && h.unavailable && !h.contact_left) emailForm(h.message);
    if (h.status === "resolved" && !h.rated) ratingForm();
  }

  // While a person is asked for or holds the chat, asking again would change nothing: the
  // button says where things stand instead.
  function updateHumanButton() {
    var open = handoff.status === "waiting" || handoff.status === "held";
    humanButton.disabled = open;
    humanButton.textContent = !open ? "Talk to a human"
      : handoff.status === "held" ? "Talking to a person" : "A person was asked";
  }

  function removeForm(kind) {
    var form = forms[kind];
    if (form && form.parentNode) form.parentNode.removeChild(form);
    delete forms[kind];
  }

  // Nobody can answer now: say why (once), then ask for an address to reply to.
  function emailForm(message) {
    if (forms.email) return;
    info(message);
    var form = el("form", { class: "inline-form", "aria-label": "Leave your e-mail address" });
    form.appendChild(el("p", {}, "Your e-mail address, for our reply:"));
    var address = el("input", { type: "email", required: "required", placeholder: "you@example.com",
                                "aria-label": "Your e-mail address", maxlength: "254" });
    form.appendChild(address);
    form.appendChild(el("button", { type: "submit" }, "Send"));
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!send({ type: "contact", email: address.value.trim() })) {
        notice("Not connected; your address was not sent. Try again in a moment.");
      }
    });
    forms.email = form;
    log.appendChild(form);
    scrollDown();
  }

  function ratingForm() {
    if (forms.rating) return;
    var form = el("form", { class: "inline-form", "aria-label": "Rate this conversation" });
    form.appendChild(el("p", {}, "How did we do? Rate this conversation from 1 to 5."));
    var score = 0;
    var stars = [1, 2, 3, 4, 5].map(function (n) {
      var star = el("button", { type: "button", "aria-label": "Rate " + n + " out of 5",
                                "aria-pressed": "false" }, String(n) + "\u2605");
      star.addEventListener("click", function () {
        score = n;
        stars.forEach(function (s, i) { s.setAttribute("aria-pressed", String(i < n)); });
      });
      form.appendChild(star);
      return star;
    });
    var comment = el("textarea", { rows: "2", maxlength: "1000", placeholder: "A comment (optional)",
                                   "aria-label": "Comment" });
    form.appendChild(comment);
    form.appendChild(el("button", { type: "submit" }, "Send rating"));
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!score) { notice("Choose from 1 to 5 first."); return; }
      if (!send({ type: "rating", score: score, comment: comment.value.trim() })) {
        notice("Not connected; your rating was not sent. Try again in a moment.");
      }
    });
    forms.rating = form;
    log.appendChild(form);
    scrollDown();
  }

  // Handles the handoff frames; false for any other frame.
  function handleAgentFrame(frame) {
    switch (frame.type) {
      case "handoff.ok":
        handoff.status = frame.status;
        if (frame.status === "held") setAgent(frame.agent_name);
        else if (!frame.unavailable) info(waitingText(frame));
        return true;
      case "handoff.unavailable":
        if (frame.contact_left) info(frame.message);
        else emailForm(frame.message);
        return true;
      case "agent.joined":
        handoff.status = "held";
        setAgent(frame.agent_name);
        info(frame.agent_name + " joined the chat.");
        return true;
      case "agent.message":
        window.clearTimeout(agentTypingTimer);
        setTyping(false);
        upsert({ id: frame.message_id, role: "agent", text: frame.text, agentName: frame.agent_name,
                 done: true });
        return true;
      case "agent.typing":
        setTyping(true);
        window.clearTimeout(agentTypingTimer);
        agentTypingTimer = window.setTimeout(function () { setTyping(false); }, 5000);
        return true;
      case "agent.left":
        setAgent("");
        setTyping(false);
        handoff.status = frame.reason === "disconnected" ? "waiting" : null;
        info(frame.reason === "disconnected"
          ? frame.agent_name + " was disconnected; the next person from our team will reply here."
          : frame.agent_name + " left the chat; our assistant answers again.");
        return true;
      case "handoff.resolved":
        setAgent("");
        handoff.status = "resolved";
        info(frame.agent_name + " marked this conversation as resolved.");
        ratingForm();
        return true;
      case "contact.ok":
        removeForm("email");
        info("Thanks: we will reply to " + frame.email + ".");
        return true;
      case "rating.ok":
        removeForm("rating");
        handoff.status = null;
        info("Thanks for your rating.");
        return true;
      default:
        return false;
    }
  }

  // --- events ------------------------------------------------------------------------------

  function setOpen(open) {
    panel.hidden = !open;
    launcher.setAttribute("aria-expanded", String(open));
    launcher.setAttribute("aria-label", open ? "Close chat" : "Open chat");
    state.open = open;
    saveState();
    if (open) {
      input.focus();
      scrollDown();
    }
  }

  launcher.addEventListener("click", function () { setOpen(panel.hidden); });
  closeButton.addEventListener("click", function () { setOpen(false); launcher.focus(); });
  panel.addEventListener("keydown", function (event) {
    if (event.key === "Escape") { setOpen(false); launcher.focus(); }
  });
  humanButton.addEventListener("click", function () {
    if (!send({ type: "handoff" })) notice("Not connected yet; try again in a moment.");
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    ask(input.value);
    input.value = "";
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  state.messages.forEach(renderMessage);
  if (state.open) setOpen(true);
  window.setInterval(function () { send({ type: "ping" }); }, PING_EVERY_MS);
  connect();
})();
