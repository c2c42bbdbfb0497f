// Vite build of the browser apps: `npx vite build --config viewer/vite.config.ts` → viewer/dist/.
// Multi-page: login + navigation (index), sonographer console, bedside panel, AR plugin example,
// study browser and report (studies), billing dashboard for admins (billing), plugin developer
// portal and review (developer), a hospital's plugin marketplace (marketplace), and the sandboxed
// host page of a live plugin's layer on the console (plugin-frame).
// A plain object (no `vite` import) so that this file type-checks with the browser code and
// without Node's types.
const root = decodeURIComponent(new URL('.', import.meta.url).pathname).replace(/\/$/, '');

export default {
  root,
  // Relative asset URLs: the pages work wherever the server mounts them.
  base: './',
  // The dev server may read the shared protocol files and the SDK one level up.
  server: { fs: { allow: [`${root}/..`] } },
  build: {
    outDir: `${root}/dist`,
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: true,
    chunkSizeWarningLimit: 4096,
    rollupOptions: {
      input: {
        index: `${root}/index.html`,
        console: `${root}/console.html`,
        bedside: `${root}/bedside.html`,
        'ar-example': `${root}/ar-example.html`,
        studies: `${root}/studies.html`,
        billing: `${root}/billing.html`,
        developer: `${root}/developer.html`,
        marketplace: `${root}/marketplace.html`,
        'plugin-frame': `${root}/plugin-frame.html`,
      },
    },
  },
};
