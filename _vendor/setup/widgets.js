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
