// Cloud connection form (admin): show only the fieldsets the chosen authentication uses.
// Fieldsets carry classes "cloud-auth cloud-auth-<type>"; those without "cloud-auth" are always shown.
// Without JavaScript every fieldset stays visible and the server still checks what each type needs.
(function () {
  "use strict";
  function apply() {
    var select = document.getElementById("id_auth_type");
    if (!select) { return; }
    var chosen = "cloud-auth-" + select.value;
    document.querySelectorAll("fieldset.cloud-auth").forEach(function (fieldset) {
      fieldset.hidden = !fieldset.classList.contains(chosen);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var select = document.getElementById("id_auth_type");
    if (select) { select.addEventListener("change", apply); apply(); }
  });
})();
