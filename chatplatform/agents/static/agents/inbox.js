/*
 * The agent inbox: a live list of conversations waiting for a person, a conversation's
 * transcript, claim / reply / hand back / resolve, and one click from an agent's reply to a new
 * FAQ or a phrasing of an existing one. Everything live comes over /ws/agent/ (docs/protocol.md,
 * "Agent socket"); no polling. Every text from the network is put on the page with
 * textContent, never as markup.
 */
(function () {
  "use strict";

  var PING_MS = Number(document.body.dataset.pingMs) || 20000;
  var CAN_EDIT_FAQS = document.body.dataset.canEditFaqs === "true";
  var WS_URL = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/agent/";
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 15000;
  var TYPING_EVERY_MS = 3000; // at most one "typing" frame per this while the agent types
  var OUTBOX_KEY = "cs-inbox:outbox"; // replies not acked yet: sent again after a reconnect
  var OPEN_KEY = "cs-inbox:open"; // the conversation on screen, restored after a reload
  var CLOSE_FORBIDDEN = 4403;

  var $ = function (id) { return document.getElementById(id); };
  var queue = $("queue"), log = $("log"), chat = $("chat");

  var me = null; // {id, name}
  var conversations = {}; // conversation id -> summary
  var openId = null;
  var messages = []; // transcript of the open conversation, oldest first
  var socket = null, attempts = 0, refused = false, lastTyping = 0;
  var outbox = loadJSON(OUTBOX_KEY, {});

  function loadJSON(key, fallback) {
    try { return JSON.parse(sessionStorage.getItem(key) || "null") || fallback; }
    catch (err) { return fallback; }
  }
  function saveOutbox() { sessionStorage.setItem(OUTBOX_KEY, JSON.stringify(outbox)); }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text; // text only, never markup
    return node;
  }

  // --- sound and badge ------------------------------------------------------------------------

  var audio = null;
  $("sound").addEventListener("click", function () {
    // Browsers only let a page play sound after a click on it: this button is that click.
    if (audio) { audio.close(); audio = null; }
    else { audio = new (window.AudioContext || window.webkitAudioContext)(); beep(); }
    $("sound").textContent = audio ? "Sound on" : "Sound off";
    $("sound").setAttribute("aria-pressed", String(!!audio));
  });

  function beep() {
    if (!audio) return;
    var osc = audio.createOscillator(), gain = audio.createGain();
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.15, audio.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.4);
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.4);
  }

  function waitingCount() {
    return Object.keys(conversations).filter(function (id) {
      return conversations[id].status === "waiting";
    }).length;
  }

  function updateBadge() {
    var n = waitingCount();
    $("badge").textContent = String(n);
    $("badge").hidden = n === 0;
    document.title = (n ? "(" + n + ") " : "") + "Inbox · chat platform";
  }

  // --- the queue ------------------------------------------------------------------------------

  function statusText(c) {
    if (c.status === "waiting") {
      if (c.unavailable === "no_agent") return "waiting (customer told nobody answered)";
      if (c.unavailable === "closed") return "waiting (asked outside opening hours)";
      return "waiting";
    }
    if (c.status === "held") return c.agent_id === me.id ? "yours" : "with " + c.agent_name;
    return c.status.replace("_", " ");
  }

  function renderQueue() {
    var ids = Object.keys(conversations).sort(function (a, b) {
      return conversations[b].last_activity_at.localeCompare(conversations[a].last_activity_at);
    });
    queue.textContent = "";
    ids.forEach(function (id) {
      var c = conversations[id];
      var item = el("li");
      item.dataset.id = id;
      item.setAttribute("aria-current", String(id === openId));
      var line = el("div", "line");
      line.appendChild(el("span", "", c.site_name));
      line.appendChild(el("span", "pill " + c.status, statusText(c)));
      item.appendChild(line);
      item.appendChild(el("div", "preview", c.preview || "(no message yet)"));
      if (c.contact_email) item.appendChild(el("div", "contact", "E-mail left: " + c.contact_email));
      item.addEventListener("click", function () { open(id); });
      queue.appendChild(item);
    });
    $("queue-empty").hidden = ids.length > 0;
    updateBadge();
  }

  function upsertConversation(c) {
    var before = conversations[c.conversation_id];
    var isOpen = c.status === "waiting" || c.status === "held";
    if (isOpen) conversations[c.conversation_id] = c;
    else delete conversations[c.conversation_id]; // handed back or resolved: out of the queue
    if (c.status === "waiting" && (!before || before.status !== "waiting")) beep();
    renderQueue();
    if (c.conversation_id === openId) renderHead(c);
  }

  // --- the open conversation ------------------------------------------------------------------

  function open(id) {
    openId = id;
    sessionStorage.setItem(OPEN_KEY, id);
    messages = [];
    log.textContent = "";
    send({ type: "open", conversation_id: id });
    renderQueue();
  }

  function renderHead(c) {
    chat.hidden = false;
    $("chat-site").textContent = c.site_name;
    $("chat-status").textContent = statusText(c);
    $("chat-status").className = "pill " + c.status;
    $("chat-contact").hidden = !c.contact_email;
    $("chat-contact").textContent = c.contact_email ? "E-mail left for a reply: " + c.contact_email : "";
    var mine = c.status === "held" && c.agent_id === me.id;
    $("claim").disabled = c.status !== "waiting";
    $("hand-back").disabled = !mine;
    $("resolve").disabled = !mine;
    $("reply").disabled = !mine;
    $("send").disabled = !mine;
    $("reply").placeholder = mine ? "Write to the customer" : "Claim the conversation to reply";
  }

  function who(m) {
    if (m.role === "customer") return "Customer";
    if (m.role === "agent") return m.agent_name || "Agent";
    return "Bot (" + (m.source || "assistant") + ")";
  }

  function upsertMessages(list) {
    list.forEach(function (m) {
      var found = false;
      for (var i = 0; i < messages.length; i++) {
        if (messages[i].id === m.id) { messages[i] = m; found = true; }
      }
      if (!found) messages.push(m);
    });
    renderLog();
  }

  function renderLog() {
    log.textContent = "";
    messages.forEach(function (m, index) {
      var bubble = el("div", "msg " + m.role);
      bubble.dataset.id = m.id;
      bubble.appendChild(el("span", "who", who(m)));
      bubble.appendChild(el("span", "text", m.text));
      if (m.role === "agent" && CAN_EDIT_FAQS) {
        var question = questionBefore(index);
        if (question) bubble.appendChild(faqTools(question, m));
      }
      log.appendChild(bubble);
    });
    log.scrollTop = log.scrollHeight;
  }

  function questionBefore(index) {
    for (var i = index - 1; i >= 0; i--) {
      if (messages[i].role === "customer") return messages[i];
    }
    return null;
  }

  // --- reply -> FAQ, in one click -------------------------------------------------------------

  function csrfToken() {
    return document.querySelector("#csrf input[name=csrfmiddlewaretoken]").value;
  }

  function faqTools(question, reply) {
    var box = el("details", "faq");
    box.appendChild(el("summary", "", "Save to the FAQ"));
    var body = el("div");
    box.appendChild(body);
    box.addEventListener("toggle", function () {
      if (!box.open || body.childNodes.length) return;
      body.appendChild(el("p", "", "Question: " + question.text));
      var create = el("button", "new-faq", "New FAQ with this answer");
      create.type = "button";
      create.addEventListener("click", function () {
        postFaq({ action: "new_faq", question_id: question.id, reply_id: reply.id }, body);
      });
      body.appendChild(create);
      var url = "/agents/conversations/" + openId + "/questions/" + question.id + "/faq-options/";
      fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); })
        .then(function (data) {
          (data.nearest || []).forEach(function (faq) {
            var add = el("button", "add-phrasing", "Add as a phrasing of: " + faq.question);
            add.type = "button";
            add.addEventListener("click", function () {
              postFaq({ action: "add_phrasing", question_id: question.id, faq_id: faq.faq_id }, body);
            });
            body.appendChild(add);
          });
        });
    });
    return box;
  }

  function postFaq(fields, body) {
    var form = new URLSearchParams(fields);
    fetch("/agents/conversations/" + openId + "/faq/", {
      method: "POST", credentials: "same-origin", body: form,
      headers: { "X-CSRFToken": csrfToken() },
    }).then(function (r) { return r.json(); }).then(function (data) {
      var text = data.ok
        ? (data.created ? "Saved: FAQ " : "Already there: FAQ ") + data.faq_id + " (" + data.faq_question + ")"
        : "Not saved: " + data.error;
      body.appendChild(el("p", "faq-result", text));
    });
  }

  // --- the socket -----------------------------------------------------------------------------

  function connect() {
    socket = new WebSocket(WS_URL);
    socket.addEventListener("message", function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (err) { return; }
      handle(frame);
    });
    socket.addEventListener("close", function (event) {
      if (event.code === CLOSE_FORBIDDEN || refused) {
        refused = true;
        $("connection").textContent = "Not allowed: sign in as staff";
        return;
      }
      var delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempts));
      attempts += 1;
      $("connection").textContent = "Reconnecting…";
      window.setTimeout(connect, delay / 2 + Math.random() * delay / 2);
    });
  }

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function notice(text) {
    $("notice").textContent = text;
    $("notice").hidden = !text;
  }

  function handle(frame) {
    switch (frame.type) {
      case "inbox":
        attempts = 0;
        me = frame.agent;
        $("connection").textContent = "Connected as " + me.name;
        conversations = {};
        frame.conversations.forEach(function (c) { conversations[c.conversation_id] = c; });
        renderQueue();
        var wanted = new URLSearchParams(location.search).get("conversation") ||
          sessionStorage.getItem(OPEN_KEY);
        if (wanted) open(wanted);
        Object.keys(outbox).forEach(function (cid) { send(outbox[cid]); }); // unacked replies
        break;
      case "conversation":
        upsertConversation(frame.conversation);
        break;
      case "transcript":
        if (frame.conversation_id !== openId) break;
        messages = frame.messages;
        if (frame.conversation) renderHead(frame.conversation);
        renderLog();
        break;
      case "messages":
        if (frame.conversation_id === openId) upsertMessages(frame.messages);
        break;
      case "reply.ok":
        delete outbox[frame.client_message_id];
        saveOutbox();
        break;
      case "claim.ok": case "hand_back.ok": case "resolve.ok":
        notice("");
        break;
      case "error":
        if (frame.ref && outbox[frame.ref]) {
          // Refused for good (not held any more, too long...): give the text back.
          $("reply").value = outbox[frame.ref].text;
          delete outbox[frame.ref];
          saveOutbox();
        }
        if (frame.code === "not_found" && frame.ref === openId) {
          sessionStorage.removeItem(OPEN_KEY);
          openId = null;
          chat.hidden = true;
        }
        notice(frame.message + " (" + frame.code + ")");
        break;
      default:
        break; // pong
    }
  }

  // --- events ---------------------------------------------------------------------------------

  $("claim").addEventListener("click", function () { send({ type: "claim", conversation_id: openId }); });
  $("hand-back").addEventListener("click", function () { send({ type: "hand_back", conversation_id: openId }); });
  $("resolve").addEventListener("click", function () { send({ type: "resolve", conversation_id: openId }); });
  $("composer").addEventListener("submit", function (event) {
    event.preventDefault();
    var text = $("reply").value.trim();
    if (!text || !openId) return;
    var cid = "a_" + Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
    var frame = { type: "reply", conversation_id: openId, client_message_id: cid, text: text };
    outbox[cid] = frame;
    saveOutbox();
    send(frame); // if the socket is down, the outbox sends it after the reconnect
    $("reply").value = "";
  });
  $("reply").addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("reply").addEventListener("input", function () {
    if (Date.now() - lastTyping < TYPING_EVERY_MS || !openId) return;
    lastTyping = Date.now();
    send({ type: "typing", conversation_id: openId });
  });

  window.setInterval(function () { send({ type: "ping" }); }, PING_MS);
  connect();
})();
