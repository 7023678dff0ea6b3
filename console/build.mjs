// Copies mqtt.js's browser build from node_modules into web/vendor/ and
// records its version and SHA-256 beside it; console_test.go checks both
// against package-lock.json. Run: npm ci && npm run build
import { createHash } from 'node:crypto'
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs'

const pkg = JSON.parse(readFileSync('node_modules/mqtt/package.json', 'utf8'))
const js = readFileSync('node_modules/mqtt/dist/mqtt.min.js')
mkdirSync('web/vendor', { recursive: true })
writeFileSync('web/vendor/mqtt.min.js', js)
const meta = {
  name: 'mqtt',
  version: pkg.version,
  file: 'dist/mqtt.min.js',
  sha256: createHash('sha256').update(js).digest('hex')
}
writeFileSync('web/vendor/mqtt.min.js.json', JSON.stringify(meta, null, 2) + '\n')
console.log(`web/vendor/mqtt.min.js: mqtt ${meta.version} (${js.length} bytes)`)
