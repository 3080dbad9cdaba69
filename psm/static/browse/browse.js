// Copy buttons: copy the button's `data-copy` text. The Clipboard API needs a secure context
// (HTTPS or localhost); elsewhere a hidden textarea and execCommand("copy") do it.
"use strict";

function psmCopy(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text);
  }
  return new Promise(function (resolve, reject) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var done = false;
    try { done = document.execCommand("copy"); } catch (e) { done = false; }
    document.body.removeChild(area);
    if (done) { resolve(); } else { reject(new Error("copy refused")); }
  });
}

document.addEventListener("click", function (event) {
  var button = event.target.closest("button.copy");
  if (!button) { return; }
  psmCopy(button.dataset.copy).then(function () {
    button.textContent = "Copied";
    button.classList.add("copied");
    button.dataset.copied = button.dataset.copy;
  }, function () {
    button.textContent = "Select and copy";
  }).then(function () {
    setTimeout(function () {
      button.textContent = "Copy";
      button.classList.remove("copied");
    }, 2000);
  });
});
