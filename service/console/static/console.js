// The console's only script (progressive enhancement: every page works without it).
// "Add a row" on the new-patient form copies the last history row with the next index.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var button = document.getElementById("add-row");
  var body = document.querySelector("#history tbody");
  if (!button || !body) { return; }
  button.hidden = false;
  button.addEventListener("click", function () {
    var rows = body.querySelectorAll("tr.history-row");
    var last = rows[rows.length - 1];
    var index = rows.length;
    var copy = last.cloneNode(true);
    copy.querySelectorAll("input, select, label").forEach(function (element) {
      ["id", "name", "for"].forEach(function (attribute) {
        var value = element.getAttribute(attribute);
        if (value) { element.setAttribute(attribute, value.replace(/history-\d+-/, "history-" + index + "-")); }
      });
      if (element.tagName === "LABEL") {
        element.textContent = element.textContent.replace(/row \d+/, "row " + (index + 1));
      } else if (element.type === "checkbox") {
        element.checked = false;
      } else {
        element.value = "";
      }
    });
    body.appendChild(copy);
    copy.querySelector("input").focus();
  });
});
