'use strict'
// An mqtt.js peer in a node process of its own (peer.js says what it does
// and which options, commands and events it has).
//
// Usage: node js/client.js '<json options>'
//   options: peer.js's, and lifetimeMs (exit after this long; default 60000)
// Reads JSON commands on stdin, one per line, and prints JSON events on
// stdout, one per line. After the "end" command's "ended" event the
// process exits; when stdin closes, the client disconnects and the
// process exits.

const readline = require('readline')
const peer = require('./peer')

const opts = JSON.parse(process.argv[2] || '{}')

function emit (ev) {
  process.stdout.write(JSON.stringify(ev) + '\n')
  if (ev.event === 'ended') process.exit(0)
}

const client = peer.open(opts, emit)

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  if (line.trim()) client.handle(JSON.parse(line))
})
// stdin closing means the Go test is done with us: leave cleanly.
rl.on('close', () => client.close(() => process.exit(0)))

// Never outlive the test that started us.
setTimeout(() => {
  emit({ event: 'error', where: 'lifetime', message: 'lifetime exceeded' })
  process.exit(3)
}, opts.lifetimeMs || 60000).unref()
