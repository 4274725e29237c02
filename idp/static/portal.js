// The portal's live search: filters as the user types, the way the server's ?q= does without JavaScript.
// An account whose name or id matches keeps all its roles; otherwise only the roles whose name matches.
"use strict";

(function () {
  const input = document.getElementById("portal-search");
  const noMatch = document.getElementById("portal-no-match");
  if (!input || !noMatch) {
    return;
  }
  const matches = (element, query) => (element.dataset.search || "").toLowerCase().includes(query);

  function filter() {
    const query = input.value.trim().toLowerCase();
    let shown = 0;
    for (const account of document.querySelectorAll("[data-account]")) {
      const whole = matches(account, query);
      let roles = 0;
      for (const role of account.querySelectorAll("[data-role]")) {
        role.hidden = !(whole || matches(role, query));
        roles += role.hidden ? 0 : 1;
      }
      account.hidden = roles === 0;
      shown += roles;
    }
    for (const app of document.querySelectorAll("[data-app]")) {
      app.hidden = !matches(app, query);
      shown += app.hidden ? 0 : 1;
    }
    for (const section of document.querySelectorAll("[data-section]")) {
      section.hidden = !section.querySelector("[data-account]:not([hidden]), [data-app]:not([hidden])");
    }
    noMatch.hidden = shown > 0;
  }

  input.addEventListener("input", filter);
})();
