// smoke report: step timeline, image compare sliders, lightbox. No network.
(function () {
  "use strict";
  var frames = JSON.parse(document.getElementById("frames").textContent || "{}");
  var view = document.getElementById("frame-view");
  var caption = document.getElementById("frame-caption");
  function show(step) {
    var btn = document.querySelector('#timeline button[data-step="' + step + '"]');
    if (!btn) return;
    document.querySelectorAll("#timeline button.active").forEach(function (b) { b.classList.remove("active"); });
    btn.classList.add("active");
    var key = btn.getAttribute("data-frame");
    if (view && key !== null && frames[key]) {
      view.src = frames[key];
      view.setAttribute("data-frame", key);
      if (caption) caption.textContent = "after step " + step + ": " + btn.getAttribute("title") + " (recording frame " + key + ")";
    }
    document.querySelectorAll("details.step.active").forEach(function (d) { d.classList.remove("active"); });
    var details = document.getElementById("step-" + step);
    if (details) { details.classList.add("active"); details.open = true; }
  }
  document.querySelectorAll("#timeline button").forEach(function (b) {
    b.addEventListener("click", function () { show(b.getAttribute("data-step")); });
  });
  document.querySelectorAll(".compare").forEach(function (c) {
    var range = c.parentElement.querySelector("input[type=range]");
    var overlay = c.querySelector(".overlay");
    var inner = overlay && overlay.querySelector("img");
    var base = c.querySelector("img");
    function fit() { if (inner && base) inner.style.width = base.clientWidth + "px"; }
    function apply() { if (overlay && range) overlay.style.width = range.value + "%"; }
    if (range) range.addEventListener("input", apply);
    window.addEventListener("resize", fit);
    if (base) base.addEventListener("load", fit);
    fit(); apply();
  });
  var box = document.getElementById("lightbox");
  var boxImg = box && box.querySelector("img");
  document.querySelectorAll("img.zoom").forEach(function (img) {
    img.addEventListener("click", function () { if (box) { boxImg.src = img.src; box.classList.add("open"); } });
  });
  if (box) box.addEventListener("click", function () { box.classList.remove("open"); });
  var first = document.querySelector("#timeline button.failed, #timeline button.error") || document.querySelector("#timeline button");
  if (first) show(first.getAttribute("data-step"));
})();
