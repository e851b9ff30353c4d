// The app shell's service worker: after the first visit the app opens with
// no network at all. Scope: the app's own directory (/app/).
//
// Cache first for the shell (html, js, css, wasm, catalogues, icons). The
// API and the sync socket live outside the scope (/api, /sync) and are
// never cached: case data lives in IndexedDB, not here.
//
// scripts/build-app.sh rewrites the two lines below: the build id (a hash
// of the shell, so a new build installs a new cache) and the shell list.
const BUILD = 'dev';
const SHELL = ['./', './index.html', './app.js', './style.css'];

const CACHE = `casesync-app-${BUILD}`;

self.addEventListener('install', (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      // `reload` skips the HTTP cache, so the shell is this build's.
      await cache.addAll(SHELL.map((url) => new Request(url, { cache: 'reload' })));
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      for (const key of await caches.keys()) {
        if (key.startsWith('casesync-app-') && key !== CACHE) await caches.delete(key);
      }
      // Control the page that registered us right away, so that it works
      // offline without a second visit.
      await self.clients.claim();
    })(),
  );
});

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET') return;
  const url = new URL(req.url);
  const scope = new URL(self.registration.scope);
  if (url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return;
  event.respondWith(
    (async () => {
      // Navigations (any #route) get the shell's index.html. (`match`, not
      // `open`: opening would recreate a cache "forget this device" just
      // deleted.)
      const key = req.mode === 'navigate' ? './index.html' : req;
      const hit = await caches.match(key, { ignoreSearch: true, cacheName: CACHE });
      if (hit) return hit;
      return fetch(req);
    })(),
  );
});
