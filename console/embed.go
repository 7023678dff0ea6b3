// Package console holds Roost's web console: static HTML, CSS and
// JavaScript in web/, embedded in the binary and served by package
// httpapi. web/vendor/mqtt.min.js is mqtt.js's browser build, copied from
// the npm package pinned in package-lock.json by `npm run build` (see
// build.mjs) and committed, so that building Roost needs no Node.js.
package console

import "embed"

// Assets is the console's files under "web/".
//
//go:embed all:web
var Assets embed.FS
