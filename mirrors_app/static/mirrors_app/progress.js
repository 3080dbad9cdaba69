// Live progress of mirror runs: every element with data-mirror-progress="<mirror id>" and
// data-progress-url="<the progress endpoint>" is refreshed in place from the endpoint, one
// request per endpoint for all the mirrors shown, every 2 s while one of them is active.
// The server renders each mirror's fragment (the same template as the page's first render).
(function () {
  "use strict";
  var INTERVAL = 2000;

  function cells() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-mirror-progress]"));
  }

  function poll() {
    var byUrl = {};
    cells().forEach(function (cell) {
      var url = cell.getAttribute("data-progress-url");
      var ids = byUrl[url] || (byUrl[url] = []);
      var id = cell.getAttribute("data-mirror-progress");
      if (ids.indexOf(id) < 0) ids.push(id);
    });
    var urls = Object.keys(byUrl);
    if (!urls.length) return;
    Promise.all(urls.map(function (url) {
      var sep = url.indexOf("?") < 0 ? "?" : "&";
      return fetch(url + sep + "ids=" + byUrl[url].join(","), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      }).then(function (response) {
        if (!response.ok) throw new Error("progress: HTTP " + response.status);
        return response.json();
      }).then(update);
    })).then(function (answers) {
      if (answers.some(function (active) { return active; })) {
        window.setTimeout(poll, INTERVAL);
      }
    }).catch(function () {
      // Signed out, or the server is away: stop; a reload starts again.
    });
  }

  // Put each mirror's fragment in place; return whether one of them is still active.
  function update(answer) {
    answer.mirrors.forEach(function (entry) {
      var selector = '[data-mirror-progress="' + entry.id + '"]';
      Array.prototype.forEach.call(document.querySelectorAll(selector), function (cell) {
        cell.innerHTML = entry.html;
        cell.setAttribute("data-active", entry.active ? "true" : "false");
      });
    });
    return answer.active;
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", poll);
  } else {
    poll();
  }
})();
