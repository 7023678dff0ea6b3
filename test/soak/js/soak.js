'use strict'
// mqtt.js clients for Roost's soak test (test/soak), driven from Go.
//
// Usage: node js/soak.js '<json>'
//   {durationMs, clients: [{id, url, role: "busy"|"idle", protocolVersion,
//    keepalive, intervalMs}], wx: bool}
// Every client connects with a will on soak/will/<id> (a will means the
// broker dropped it), reconnects by itself like a mini program would
// (reconnectPeriod 1 s), and for durationMs either publishes a numbered QoS
// 1 message to its own echo topic every intervalMs and checks each comes
// back once (busy), or only keeps its connection alive with PINGREQ
// (idle). Then it waits for the echoes in flight, disconnects cleanly and
// prints one JSON line per client with what happened.
//
// With wx set, the process has exactly one client and connects it through
// mqtt.js's WeChat mini program transport (wx:// or wxs://, the code in
// mqtt.js's lib/connect/wx), driven by a stand-in for the mini program's
// wx.connectSocket / SocketTask API built on a real WebSocket client (the
// ws package). That transport keeps its socket in module variables, so it
// holds one client per process, as in a mini program.

const cfg = JSON.parse(process.argv[2])

if (cfg.wx) {
  // The wx transport sends chunk.buffer, the whole ArrayBuffer behind a
  // Buffer. A mini program's Buffers never come from a pool, so each
  // chunk's ArrayBuffer is exactly its bytes; Node's small Buffers share an
  // 8 KiB pool, and the transport would send the pool. Turning the pool
  // off (before mqtt.js makes any Buffer) makes Node behave like the mini
  // program.
  require('buffer').Buffer.poolSize = 0
  global.wx = { connectSocket: standInConnectSocket }
}

const mqtt = require('mqtt')

// standInConnectSocket is wx.connectSocket as the WeChat runtime documents
// it: it returns a SocketTask at once and reports through callbacks;
// messages arrive as ArrayBuffer.
function standInConnectSocket ({ url, protocols }) {
  const WebSocket = require('ws')
  const ws = new WebSocket(url, protocols)
  ws.binaryType = 'arraybuffer'
  // The runtime reports errors only to onError listeners; an EventEmitter
  // without one would end the process.
  ws.on('error', () => {})
  return {
    send ({ data, success, fail }) {
      if (!(data instanceof ArrayBuffer)) {
        // The mini program API takes a string or an ArrayBuffer.
        if (fail) fail('send: data is not an ArrayBuffer')
        return
      }
      ws.send(data, (err) => {
        if (err) { if (fail) fail(err.message) } else if (success) success()
      })
    },
    close ({ success, fail } = {}) {
      if (ws.readyState === WebSocket.CLOSED) { if (fail) fail('already closed'); return }
      ws.once('close', () => { if (success) success() })
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate() // as a mini program can, before onOpen
      else ws.close(1000)
    },
    onOpen (cb) { ws.on('open', () => cb({})) },
    onMessage (cb) { ws.on('message', (data) => cb({ data })) },
    onClose (cb) { ws.on('close', (code, reason) => cb({ code, reason: String(reason) })) },
    onError (cb) { ws.on('error', (err) => cb({ errMsg: err.message })) }
  }
}

function runClient (c) {
  const r = {
    id: c.id,
    url: c.url,
    role: c.role,
    connects: 0,
    closes: 0,
    serverDisconnects: [],
    errors: [],
    sent: 0,
    acked: 0,
    received: 0,
    duplicates: 0,
    missing: 0
  }
  const echo = 'soak/echo/' + c.id
  const seen = new Set()
  let ending = false
  const client = mqtt.connect(c.url, {
    clientId: c.id,
    protocolVersion: c.protocolVersion || 4,
    keepalive: c.keepalive,
    clean: true,
    connectTimeout: 10000,
    reconnectPeriod: 1000,
    will: { topic: 'soak/will/' + c.id, payload: 'dropped', qos: 1, retain: false },
    // mqtt.js registers its wx transport only where it believes it runs in
    // a browser-like runtime (a mini program is one); in Node this asks
    // for that set of transports.
    forceNativeWebSocket: !!cfg.wx
  })
  client.on('connect', () => {
    r.connects++
    if (c.role === 'busy') client.subscribe(echo, { qos: 1 })
    else client.subscribe('soak/idle/' + c.id, { qos: 0 })
  })
  client.on('close', () => { if (!ending) r.closes++ })
  client.on('disconnect', (p) => { r.serverDisconnects.push(p.reasonCode === undefined ? 0 : p.reasonCode) })
  client.on('error', (err) => { if (r.errors.length < 10) r.errors.push(String(err && err.message)) })
  client.on('message', (topic, payload) => {
    if (topic !== echo) return
    const n = Number(payload.toString())
    if (seen.has(n)) r.duplicates++
    else { seen.add(n); r.received++ }
  })
  let timer = null
  if (c.role === 'busy') {
    let n = 0
    timer = setInterval(() => {
      if (!client.connected) return // an outage shows in closes; count only what was sent
      const seq = n++
      r.sent++
      client.publish(echo, String(seq), { qos: 1 }, (err) => { if (!err) r.acked++ })
    }, c.intervalMs || 200)
  }
  return new Promise((resolve) => {
    setTimeout(() => {
      if (timer) clearInterval(timer)
      const until = Date.now() + 10000
      const finish = () => {
        ending = true
        r.missing = r.sent - r.received
        client.end(false, {}, () => resolve(r))
      }
      const wait = () => {
        if (r.received >= r.sent || Date.now() > until) finish()
        else setTimeout(wait, 50)
      }
      wait()
    }, cfg.durationMs)
  })
}

Promise.all(cfg.clients.map(runClient)).then((results) => {
  for (const r of results) process.stdout.write(JSON.stringify(r) + '\n')
  process.exit(0)
})
