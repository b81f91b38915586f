// Aloft's dashboard: the live parts. An element with data-live="URL" follows that URL's
// server-sent events; each event's data is HTML that replaces the element's content, or,
// with data-live-mode="append", is added at its end (the newest lines kept, scrolled to
// the bottom unless the reader scrolled up). Without JavaScript the pages still read.
(function () {
  "use strict";
  var KEEP = 1000;
  var sources = [];
  function follow(element) {
    var append = element.getAttribute("data-live-mode") === "append";
    var source = new EventSource(element.getAttribute("data-live"));
    sources.push(source);
    source.onmessage = function (event) {
      if (append) {
        var atBottom = element.scrollHeight - element.scrollTop - element.clientHeight < 40;
        element.insertAdjacentHTML("beforeend", event.data);
        while (element.children.length > KEEP) {
          element.removeChild(element.firstElementChild);
        }
        if (atBottom) {
          element.scrollTop = element.scrollHeight;
        }
      } else {
        element.innerHTML = event.data;
      }
      element.setAttribute("data-live-updated", String(Date.now()));
    };
    source.onopen = function () {
      element.setAttribute("data-live-open", "true");
    };
  }
  function start() {
    var elements = document.querySelectorAll("[data-live]");
    for (var i = 0; i < elements.length; i++) {
      follow(elements[i]);
    }
  }
  // A page left (or kept in the back-forward cache) closes its streams: a browser keeps
  // few connections per host, and streams of pages no longer shown would use them up.
  window.addEventListener("pagehide", function () {
    while (sources.length) {
      sources.pop().close();
    }
  });
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) {
      start();
    }
  });
  document.addEventListener("DOMContentLoaded", start);
})();
