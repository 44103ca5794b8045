// wxpush console: keeps the open page current, and sends forms without leaving it.
// Served by wxpush itself (Content-Security-Policy script-src 'self'); no library.
"use strict";

(function () {
  const csrf = () => document.querySelector('meta[name="csrf"]').content;
  const HEADERS = { "X-Requested-With": "console" };

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach((el) => {
      const at = new Date(el.getAttribute("datetime"));
      if (!isNaN(at)) {
        el.textContent = at.toLocaleString();
        el.title = el.getAttribute("datetime");
      }
    });
  }

  function nearBottom(el) {
    return el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  }

  // Parts marked data-refresh are fetched again every data-every ms while the page is shown;
  // the server escapes every value in them.
  const refreshers = [];
  function watch(el) {
    const every = Number(el.dataset.every) || 1500;
    let last = el.innerHTML;
    async function refresh() {
      if (document.hidden) return;
      try {
        const resp = await fetch(el.dataset.refresh, { headers: HEADERS, credentials: "same-origin" });
        if (resp.redirected || resp.status === 403) { location.href = "/console/login"; return; }
        if (!resp.ok) return;
        const text = await resp.text();
        if (text !== last) {
          const stick = el.classList.contains("scroll") && nearBottom(el);
          el.innerHTML = text;
          last = text;
          localTimes(el);
          if (stick) el.scrollTop = el.scrollHeight;
        }
      } catch (err) { /* offline for a moment: the next round tries again */ }
    }
    refreshers.push(refresh);
    setInterval(refresh, every);
  }

  function say(form, text, failed) {
    const out = document.querySelector(".result") || form;
    const line = out === form ? document.createElement("p") : out;
    line.textContent = text;
    line.classList.toggle("error", failed);
    if (out === form) form.after(line);
  }

  async function send(form, body, headers) {
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    try {
      const resp = await fetch(form.dataset.upload || form.action, {
        method: "POST", body, credentials: "same-origin", headers: { ...HEADERS, ...headers },
      });
      const text = await resp.text();
      say(form, resp.ok ? text : `Refused: ${text}`, !resp.ok);
      if (resp.ok) {
        form.querySelectorAll("textarea, input[type=file]").forEach((el) => { el.value = ""; });
        if (form.dataset.gone && form.closest(form.dataset.gone)) form.closest(form.dataset.gone).remove();
        refreshers.forEach((refresh) => refresh());
      }
    } catch (err) {
      say(form, "Not sent: the server cannot be reached.", true);
    } finally {
      if (button) button.disabled = false;
    }
  }

  // A photo is scaled down (JPEG) until it fits the server's body limit.
  async function fitted(file, limit) {
    if (file.size <= limit - 1024 && (file.type === "image/jpeg" || file.type === "image/png")) {
      return file;
    }
    const bitmap = await createImageBitmap(file);
    const canvas = document.createElement("canvas");
    for (const side of [1600, 1280, 1024, 800, 640, 480, 320]) {
      const scale = Math.min(1, side / Math.max(bitmap.width, bitmap.height));
      canvas.width = Math.round(bitmap.width * scale);
      canvas.height = Math.round(bitmap.height * scale);
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      for (const quality of [0.85, 0.7, 0.55, 0.4]) {
        const blob = await new Promise((done) => canvas.toBlob(done, "image/jpeg", quality));
        if (blob && blob.size <= limit - 1024) return blob;
      }
    }
    throw new Error("the image cannot be made small enough");
  }

  function hook(form) {
    if (form.dataset.upload) {
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const file = form.querySelector("input[type=file]").files[0];
        if (!file) { say(form, "Choose an image first.", true); return; }
        try {
          const image = await fitted(file, Number(form.dataset.max));
          await send(form, image, { "Content-Type": image.type || "image/jpeg", "X-CSRF-Token": csrf() });
        } catch (err) {
          say(form, `Not sent: ${err.message}`, true);
        }
      });
      return;
    }
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      send(form, new URLSearchParams(new FormData(form)), {});
    });
  }

  // "typing…" for the customer while the operator writes, at most every 15 s.
  function typing(area) {
    let last = 0;
    area.addEventListener("input", () => {
      const now = Date.now();
      if (now - last < 15000 || !area.value) return;
      last = now;
      fetch(area.dataset.typing, {
        method: "POST", credentials: "same-origin", headers: HEADERS,
        body: new URLSearchParams({ csrf: csrf() }),
      }).catch(() => {});
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    localTimes(document);
    document.querySelectorAll("[data-refresh]").forEach(watch);
    document.querySelectorAll("main form[method=post]:not(.login), main form[data-upload]").forEach(hook);
    document.querySelectorAll("textarea[data-typing]").forEach(typing);
    const scroll = document.querySelector(".live.scroll");
    if (scroll) scroll.scrollTop = scroll.scrollHeight;
  });
})();
