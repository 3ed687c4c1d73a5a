// First-boot setup: create the first administrator.
import { el, api, field, textInput, clear, showError } from "/assets/app.js";

export function render(root, s) {
  document.title = "First-time setup · Ironbridge";
  const user = textInput("admin", { autocomplete: "username", name: "username" });
  const pass = textInput("", { type: "password", autocomplete: "new-password", name: "password" });
  const pass2 = textInput("", { type: "password", autocomplete: "new-password", name: "password2" });
  const code = textInput("", { name: "setup_code", autocomplete: "one-time-code" });
  const slot = el("div");
  const btn = el("button", { type: "submit", class: "primary", text: "Create administrator", id: "setup-submit" });
  const fields = el("div", { class: "fields" },
    field("Administrator username", user, { name: "username", always: true }),
    field("Password", pass, { name: "password", always: true, help: "At least 10 characters; common passwords are refused." }),
    field("Repeat password", pass2, { name: "password2", always: true }),
    s.setup_code_required === false ? null
      : field("Setup code", code, { name: "setup_code", always: true, help: "Printed in the gateway's log at start (journalctl -u ironbridge | grep 'setup code')." }));
  const form = el("form", { id: "setup-form", attrs: { novalidate: true } }, fields, el("div", { class: "form-actions" }, btn));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clear(slot);
    if (pass.value !== pass2.value) {
      showError(form, { status: 422, message: "", fields: [{ field: "password2", message: "The passwords do not match." }] }, slot);
      return;
    }
    btn.disabled = true;
    try {
      const body = { username: user.value.trim(), password: pass.value };
      if (s.setup_code_required !== false) body.setup_code = code.value.trim();
      await api("POST", "/api/setup", body, { allow401: true });
      location.replace("/dashboard");
    } catch (e) {
      if (e.status === 401 || e.status === 403) e.message = e.message || "Wrong setup code.";
      showError(form, e, slot);
    } finally { btn.disabled = false; }
  });
  root.appendChild(el("div", { class: "auth" },
    el("div", { class: "auth-box" },
      el("div", { class: "brand" }, el("img", { src: "/assets/logo.svg", alt: "" }), "Ironbridge"),
      el("p", { text: "Welcome. This gateway has no administrator yet: create one to continue. There are no default credentials." }),
      slot, form)));
}
