'use strict'
// Loads a page in headless Chromium (through playwright-core, pointed at
// the system's Chromium) and relays what the page reports.
//
// Usage: node js/browser.js URL
// The page calls window.roostEmit(event) for each event and sets
// window.roostDone = true when finished. Events are printed as JSON lines,
// with console messages and page errors.

const { chromium } = require('playwright-core')

const emit = (ev) => process.stdout.write(JSON.stringify(ev) + '\n')

async function main () {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // playwright-core gives Chromium a fresh temporary --user-data-dir.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  try {
    const page = await browser.newPage()
    page.on('console', (m) => emit({ event: 'console', text: m.text() }))
    page.on('pageerror', (e) => emit({ event: 'pageerror', message: e.message }))
    await page.exposeFunction('roostEmit', (ev) => emit(ev))
    await page.goto(process.argv[2])
    await page.waitForFunction(() => window.roostDone === true, null, { timeout: 30000 })
  } finally {
    await browser.close()
  }
}

main().then(() => emit({ event: 'done' }), (err) => {
  emit({ event: 'error', message: String(err && err.message) })
  process.exit(1)
})
