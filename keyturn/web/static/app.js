// keyturn dashboard: the rotate dialogs and the progress poll. Plain JavaScript, no build.
"use strict";
(function () {
  function poll(box) {
    var url = box.getAttribute("data-poll");
    if (!url) return;
    setTimeout(function () {
      fetch(url, { headers: { "X-Keyturn-Fragment": "1" }, credentials: "same-origin" })
        .then(function (r) { return r.text().then(function (t) { return [r.ok, t]; }); })
        .then(function (res) {
          if (!res[0]) return;
          var holder = document.createElement("div");
          holder.innerHTML = res[1];
          var fresh = holder.firstElementChild;
          box.replaceWith(fresh);
          if (fresh.getAttribute("data-poll")) poll(fresh);
          else showFinished(fresh);
        });
    }, 600);
  }

  // Finished: reload the page, which then lists the new version and its audit entries
  // and keeps this rotation's steps on show.
  function showFinished(box) {
    var id = box.id.replace("rotation-", "");
    setTimeout(function () {
      window.location.replace(window.location.pathname + "?rotation=" + id + "#" + box.id);
    }, 400);
  }

  function submitDialog(form) {
    var dialog = form.closest("dialog");
    var errors = form.querySelector("[data-errors]");
    fetch(form.action, {
      method: "POST", body: new FormData(form), credentials: "same-origin",
      headers: { "X-Keyturn-Fragment": "1" }
    }).then(function (r) {
      return r.text().then(function (text) {
        if (!r.ok) {
          var holder = document.createElement("div");
          holder.innerHTML = text;
          errors.textContent = holder.textContent.trim();
          errors.hidden = false;
          return;
        }
        dialog.close();
        form.reset();
        var target = document.querySelector(form.getAttribute("data-progress"));
        target.innerHTML = text;
        var box = target.querySelector("[data-poll]");
        if (box) poll(box);
        target.scrollIntoView({ block: "nearest" });
      });
    });
  }

  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-dialog]");
    if (opener) {
      var dialog = document.getElementById(opener.getAttribute("data-dialog"));
      if (dialog) {
        event.preventDefault();
        dialog.querySelector("[data-errors]").hidden = true;
        dialog.showModal();
      }
    }
    var closer = event.target.closest("[data-close]");
    if (closer) closer.closest("dialog").close();
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.closest("dialog") && form.hasAttribute("data-progress")) {
      event.preventDefault();
      submitDialog(form);
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
  });
})();
