/* kefu chat widget loader.
 *   <script src="https://chat.example/widget.js" data-site-key="WIDGET_KEY" async></script>
 * Optional: data-lang="en|zh", data-transport="auto|ws|longpoll", data-open="true".
 * Loads the widget's ES modules from the same server and mounts it in a shadow DOM.
 * Page API: kefu.track(name, props) reports a conversion event such as "purchase" (bot A/B
 * tests, docs/bot.md); calls made before the widget connected are kept (up to 50).
 * kefu.identify({name, email, attributes, user_id, user_hash}) tells who the visitor is
 * (user_hash: the company backend's signature of user_id, docs/security.md); it returns a
 * promise, and a call made before the widget loaded goes with its first session. */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.dataset.siteKey || window.__kefuWidget) return;
  window.__kefuWidget = true;
  var src = new URL(script.src, document.baseURI);
  var version = src.searchParams.get("v") || "";
  var base = src.href.split("?")[0].replace(/widget\.js$/, "");
  var options = {
    base: base,
    version: version,
    siteKey: script.dataset.siteKey,
    lang: script.dataset.lang || "",
    transport: script.dataset.transport || "auto",
    open: script.dataset.open === "true",
    queued: [],
    identified: [],
  };
  var api = (window.kefu = window.kefu || {});
  api.track = function (name, props) {
    if (options.queued.length < 50) options.queued.push([name, props]);
  };
  api.identify = function (profile) {
    return new Promise(function (resolve, reject) {
      options.identified.push({ profile: profile, resolve: resolve, reject: reject });
      if (options.identified.length > 10) options.identified.shift().reject(new Error("kefu.identify: superseded"));
    });
  };
  import(base + "static/widget/app.js" + (version ? "?v=" + encodeURIComponent(version) : ""))
    .then(function (module) {
      module.mount(options);
    })
    .catch(function (err) {
      console.error("kefu widget failed to load", err);
    });
})();
