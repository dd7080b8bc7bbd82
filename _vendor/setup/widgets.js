// Glue between the vendored widget manager (html-manager/embed-amd.js) and the book's pages.
// Our own code, not fetched from npm; loaded before embed-amd.js through nb_ipywidgets_js.
(function () {
  // embed-amd.js finds its fonts from its modules' URLs, which require.js would put under the
  // page's folder; they sit beside embed-amd.js. A global `require` is require.js's config.
  var assets = new URL("../html-manager/", document.currentScript.src).href;
  window.__jupyter_widgets_assets_path__ = assets;
  window.require = { paths: { "@jupyter-widgets/html-manager/dist": assets.replace(/\/$/, "") } };

  // Sliders: the widget manager gives the handle (role="slider") no name, and for a selection
  // slider an index as its value text. Name each handle after its label and let it read out what
  // the readout shows, so that a screen reader says "B, 5" rather than "slider, 3".
  function nameSliders(root) {
    root.querySelectorAll(".widget-slider .noUi-handle").forEach(function (handle) {
      var box = handle.closest(".widget-slider");
      var label = box.querySelector(".widget-label");
      var readout = box.querySelector(".widget-readout");
      if (label && label.textContent.trim() && handle.getAttribute("aria-label") !== label.textContent.trim()) {
        handle.setAttribute("aria-label", label.textContent.trim());
      }
      if (readout && handle.getAttribute("aria-valuetext") !== readout.textContent.trim()) {
        handle.setAttribute("aria-valuetext", readout.textContent.trim());
      }
    });
  }
  var queued = false;  // one pass per frame, however many mutations (MathJax makes thousands)
  new MutationObserver(function () {
    if (queued) return;
    queued = true;
    requestAnimationFrame(function () { queued = false; nameSliders(document); });
  }).observe(document.documentElement, {
    childList: true, subtree: true, characterData: true, attributes: true, attributeFilter: ["aria-valuenow"],
  });

  // ipywidgets typesets labels with MathJax 2's MathJax.Hub.Queue; the book loads MathJax 3.
  // MathJax (deferred) has replaced its config object by DOMContentLoaded; widgets render on "load".
  document.addEventListener("DOMContentLoaded", function () {
    var mj = window.MathJax;
    if (!mj || mj.Hub || !mj.startup) return;
    mj.Hub = {
      Queue: function () {
        Array.prototype.forEach.call(arguments, function (job) {
          if (Array.isArray(job) && job[0] === "Typeset" && job[2]) {
            mj.startup.promise.then(function () { return mj.typesetPromise([job[2]]); });
          }
        });
      },
    };
  });
})();

// On a page with saved widgets, MathJax typesets the page's math once the widgets are on screen.
// Both are long tasks on the page's one main thread; typesetting first kept the explorer dead for
// a third of a second more, and the explorer is what the reader acts on. This script runs before
// MathJax's (deferred) and so can still set MathJax's startup.pageReady in its configuration.
(function () {
  var mj = window.MathJax;
  var saved = document.querySelector('script[type="application/vnd.jupyter.widget-state+json"]');
  if (!mj || !saved || (mj.startup && mj.startup.pageReady)) return;
  function shown() {  // every saved widget view has its rendered area (the manager puts it just before)
    var views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
    return document.readyState !== "loading" && Array.prototype.every.call(views, function (view) {
      var area = view.previousElementSibling;
      return area && area.classList.contains("widget-subarea") && area.firstElementChild;
    });
  }
  var widgetsShown = new Promise(function (resolve) {
    var started = Date.now();
    (function poll() {  // at most 10 s: math is never held back for long by a widget that fails
      if (shown() || Date.now() - started > 10000) resolve(); else setTimeout(poll, 25);
    })();
  });
  mj.startup = mj.startup || {};
  mj.startup.pageReady = function () {
    return widgetsShown.then(function () { return window.MathJax.startup.defaultPageReady(); });
  };
})();
