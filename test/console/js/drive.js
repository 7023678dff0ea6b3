'use strict'
// Drives the Roost console in headless Chromium (playwright-core with the
// system's Chromium) and prints one JSON event per line for console_test.go.
//
// Usage: node js/drive.js CONFIG_JSON
// CONFIG_JSON: {url, token, client, pubTopic, payload, retainedTopic,
// retainedPayload, shots, dashboardWait}

const { chromium } = require('playwright-core')
const path = require('path')

const cfg = JSON.parse(process.argv[2])
const emit = (ev) => process.stdout.write(JSON.stringify(ev) + '\n')
const T = 15000

async function main () {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // playwright-core gives Chromium a fresh temporary --user-data-dir.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  try {
    // The token as the Basic password, as a person would type it into
    // the browser's prompt.
    const ctx = await browser.newContext({
      httpCredentials: { username: 'admin', password: cfg.token },
      viewport: { width: 1280, height: 800 }
    })
    const page = await ctx.newPage()
    page.on('console', (m) => emit({ event: 'console', text: m.text() }))
    page.on('pageerror', (e) => emit({ event: 'pageerror', message: e.message }))
    page.on('dialog', (d) => d.accept())

    // Dashboard: let the charts gather a few samples.
    await page.goto(cfg.url + '#/')
    await page.locator('.card .value').first().waitFor({ timeout: T })
    await page.waitForTimeout(cfg.dashboardWait)
    await page.screenshot({ path: path.join(cfg.shots, 'console-dashboard.png') })
    emit({ event: 'dashboard', status: await page.locator('#status').textContent() })

    // Clients: the Go test's client is listed.
    await page.goto(cfg.url + '#/clients')
    await page.locator(`tr[data-client="${cfg.client}"]`).waitFor({ timeout: T })
    emit({ event: 'client', row: await page.locator(`tr[data-client="${cfg.client}"]`).innerText() })

    // MQTT client page: connect over ws://, subscribe, publish.
    await page.goto(cfg.url + '#/mqtt')
    await page.waitForFunction(() => document.querySelector('#mqtt-url').value !== '', null, { timeout: T })
    await page.locator('#mqtt-connect').click()
    await page.locator('#mqtt-state', { hasText: /^connected$/ }).waitFor({ timeout: T })
    emit({ event: 'connected', url: await page.locator('#mqtt-url').inputValue() })
    await page.locator('#sub-topic').fill(cfg.pubTopic)
    await page.locator('#sub-btn').click()
    await page.locator('#mqtt-log', { hasText: 'subscribed to ' + cfg.pubTopic }).waitFor({ timeout: T })
    await page.locator('#pub-topic').fill(cfg.pubTopic)
    await page.locator('#pub-payload').fill(cfg.payload)
    await page.locator('#pub-qos').selectOption('1')
    await page.locator('#pub-btn').click()
    await page.locator('#mqtt-log', { hasText: 'published to ' + cfg.pubTopic }).waitFor({ timeout: T })
    // Its own subscription brings the message back.
    await page.locator('#mqtt-log .msg .payload', { hasText: cfg.payload }).waitFor({ timeout: T })
    emit({ event: 'published' })
    await page.screenshot({ path: path.join(cfg.shots, 'console-client.png') })

    // Topics: the retained message published by the Go test.
    await page.goto(cfg.url + '#/topics')
    const node = page.locator(`[data-topic="${cfg.retainedTopic}"]`)
    await node.waitFor({ timeout: T })
    await node.click()
    const payload = await page.locator('#retained-payload').textContent({ timeout: T })
    emit({ event: 'retained', payload })
    await page.screenshot({ path: path.join(cfg.shots, 'console-topics.png') })

    // Bridges: the Go test's bridge, connected.
    await page.goto(cfg.url + '#/bridges')
    await page.locator('tr[data-bridge="cloud"] .pill.ok').waitFor({ timeout: T })
    emit({ event: 'bridge', row: await page.locator('tr[data-bridge="cloud"]').innerText() })
    await page.screenshot({ path: path.join(cfg.shots, 'console-bridges.png') })

    // Add a bridge: first without topics (the server's error is shown),
    // then whole; change its topics; remove it.
    await page.locator('#bridge-add').click()
    await page.locator('#bridge-json').fill(JSON.stringify({ name: 'edge', addresses: [cfg.bridgeRemote] }))
    await page.locator('#bridge-save').click()
    await page.locator('#bridge-error', { hasText: /\S/ }).waitFor({ timeout: T })
    emit({ event: 'bridge-refused', message: await page.locator('#bridge-error').textContent() })
    await page.locator('#bridge-json').fill(JSON.stringify({ name: 'edge', addresses: [cfg.bridgeRemote], topics: ['up/# out 1'] }))
    await page.locator('#bridge-save').click()
    await page.locator('tr[data-bridge="edge"] .pill.ok').waitFor({ timeout: T })
    emit({ event: 'bridge-added', row: await page.locator('tr[data-bridge="edge"]').innerText() })
    await page.locator('tr[data-bridge="edge"]').getByRole('button', { name: 'Edit' }).click()
    await page.locator('#bridge-json').waitFor({ timeout: T })
    await page.waitForFunction(() => document.querySelector('#bridge-json').value.includes('up/#'), null, { timeout: T })
    const edited = (await page.locator('#bridge-json').inputValue()).replace('up/#', 'up2/#')
    await page.locator('#bridge-json').fill(edited)
    await page.locator('#bridge-save').click()
    await page.locator('#bridge-editor').waitFor({ state: 'hidden', timeout: T })
    const cfgNow = await page.evaluate(async () => (await fetch('api/bridges/edge')).json())
    emit({ event: 'bridge-edited', text: JSON.stringify(cfgNow.config) })
    await page.locator('tr[data-bridge="edge"]').getByRole('button', { name: 'Remove' }).click()
    await page.locator('tr[data-bridge="edge"]').waitFor({ state: 'detached', timeout: T })
    emit({ event: 'bridge-removed' })
    // Cluster: the Go test's two nodes reach each other and JetStream
    // has a meta leader.
    await page.goto(cfg.url + '#/cluster')
    await page.locator('tr[data-node="console-1"] .pill.ok').waitFor({ timeout: T })
    await page.locator('tr[data-node="console-2"] .pill.ok').waitFor({ timeout: T })
    await page.locator('.cards .card', { hasText: 'Meta leader' }).filter({ hasText: /console-[12]/ }).waitFor({ timeout: T })
    emit({ event: 'cluster', row: await page.locator('tr[data-node="console-1"]').innerText(), text: await page.locator('.cards').innerText() })
    emit({ event: 'cluster-peer', row: await page.locator('tr[data-node="console-2"]').innerText() })
    await page.screenshot({ path: path.join(cfg.shots, 'console-cluster.png') })

    // Live messages: the sensors the Go test runs publish on sensors/#.
    await page.goto(cfg.url + '#/live')
    await page.waitForFunction(() => document.querySelector('#live-url').value !== '', null, { timeout: T })
    await page.locator('#live-filter').fill('sensors/#')
    await page.getByRole('button', { name: 'Watch' }).click()
    const live = page.locator('#live-log .msg .topic', { hasText: /^sensors\// }).first()
    await live.waitFor({ timeout: T })
    emit({ event: 'live', text: await live.textContent() })
  } finally {
    await browser.close()
  }
}

main().then(() => emit({ event: 'done' }), (err) => {
  emit({ event: 'error', message: String(err && err.message) })
  process.exit(1)
})
