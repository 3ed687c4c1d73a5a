// Sign-in page.
import { el, api, field, textInput, banner, clear, safeNext } from "/assets/app.js";

export function render(root) {
  document.title = "Sign in · Ironbridge";
  const user = textInput("", { autocomplete: "username", name: "username", autofocus: true });
  const pass = textInput("", { type: "password", autocomplete: "current-password", name: "password" });
  const slot = el("div");
  const btn = el("button", { type: "submit", class: "primary", text: "Sign in", id: "login-submit" });
  const form = el("form", { id: "login-form" },
    el("div", { class: "fields" },
      field("Username", user, { always: true }),
      field("Password", pass, { always: true })),
    el("div", { class: "form-actions" }, btn));
  const params = new URLSearchParams(location.search);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clear(slot);
    btn.disabled = true;
    try {
      await api("POST", "/api/login", { username: user.value.trim(), password: pass.value }, { allow401: true });
      location.replace(safeNext(params.get("next")));
    } catch (e) {
      let msg = e.message;
      if (e.status === 401) msg = "Wrong username or password.";
      if (e.status === 429) msg = "Too many failed attempts. Try again" + (e.body.retry_after ? ` in ${e.body.retry_after} s.` : " later.");
      clear(slot, banner("bad", msg));
      pass.value = "";
      pass.focus();
    } finally { btn.disabled = false; }
  });
  root.appendChild(el("div", { class: "auth" },
    el("div", { class: "auth-box" },
      el("div", { class: "brand" }, el("img", { src: "/assets/logo.svg", alt: "" }), "Ironbridge"),
      el("p", { text: "Sign in to manage this gateway." }),
      slot, form)));
}
