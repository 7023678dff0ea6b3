'use strict'
// Many mqtt.js peers (peer.js) in one node process, for the Go interop
// tests: a node process with mqtt.js loaded costs 0.15-0.3 s of CPU to
// start, a client a few milliseconds, and a test run starts a hundred
// clients.
//
// Usage: node js/hub.js
// Reads JSON commands on stdin, one per line, each for the client named
// by "cid" (a number the Go test picks):
//   {"cid":1,"cmd":"open","opts":{...peer.js options, lifetimeMs}}
//   {"cid":1,"cmd":"publish"|"subscribe"|"end",...}  (peer.js's commands)
//   {"cid":1,"cmd":"kill"}   drop the connection (no DISCONNECT), then "gone"
//   {"cid":1,"cmd":"close"}  DISCONNECT if connected, then "gone"
// Prints peer.js's events as JSON lines with the client's "cid"; "gone"
// says that the client is closed and forgotten, as "ended" does after
// "end". A client that outlives its lifetimeMs (default 60000) reports a
// "lifetime" error and is killed. The process exits when stdin closes.

const readline = require('readline')
const peer = require('./peer')

const clients = new Map()

function emitter (cid) {
  return (ev) => {
    process.stdout.write(JSON.stringify({ cid, ...ev }) + '\n')
    if (ev.event === 'ended' || ev.event === 'gone') forget(cid)
  }
}

function forget (cid) {
  const c = clients.get(cid)
  if (c) clearTimeout(c.lifetime)
  clients.delete(cid)
}

function open (cid, opts) {
  const emit = emitter(cid)
  if (clients.has(cid)) {
    emit({ event: 'error', where: 'command', message: 'cid ' + cid + ' is open already' })
    return
  }
  const c = { emit, peer: peer.open(opts, emit) }
  c.lifetime = setTimeout(() => {
    emit({ event: 'error', where: 'lifetime', message: 'lifetime exceeded' })
    kill(cid)
  }, opts.lifetimeMs || 60000)
  clients.set(cid, c)
}

function kill (cid) {
  const c = clients.get(cid)
  if (!c) return
  c.peer.kill()
  c.emit({ event: 'gone' })
}

function handle (line) {
  if (!line.trim()) return
  const m = JSON.parse(line)
  if (m.cmd === 'open') return open(m.cid, m.opts)
  const c = clients.get(m.cid)
  if (!c) {
    emitter(m.cid)({ event: 'error', where: 'command', message: 'no client ' + m.cid + ' for ' + m.cmd })
    return
  }
  switch (m.cmd) {
    case 'kill':
      kill(m.cid)
      break
    case 'close': {
      // A DISCONNECT that cannot be sent (the connection is gone) must
      // not keep the client: kill it after a while, as a test harness
      // kills a process that does not leave.
      const timer = setTimeout(() => kill(m.cid), 2000)
      c.peer.close(() => {
        clearTimeout(timer)
        if (clients.get(m.cid) === c) c.emit({ event: 'gone' })
      })
      break
    }
    default:
      c.peer.handle(m)
  }
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  try {
    handle(line)
  } catch (err) {
    process.stderr.write('hub: ' + line + ': ' + (err && err.stack) + '\n')
  }
})
rl.on('close', () => {
  for (const cid of clients.keys()) kill(cid)
  process.exit(0)
})
