'use strict'
// An mqtt.js client configured like the WeChat mini program seed
// (connectTimeout 4000, random clientId, empty username and password,
// subscribe only after connect, reconnect and error handlers).
//
// Usage: node js/roundtrip.js '<json options>'
//   url, protocolVersion (4|5), ca (PEM file for wss), port (overrides the
//   URL's port, as the seed's options do), sub (topic to subscribe to),
//   pub (topic to publish each received message to, with "echo:" prefixed)
// Prints JSON events on stdout, one per line: connect, subscribed,
// message, published, error, reconnect, close.

const fs = require('fs')
const mqtt = require('mqtt')

const o = JSON.parse(process.argv[2])
const emit = (ev) => process.stdout.write(JSON.stringify(ev) + '\n')

const options = {
  connectTimeout: 4000,
  clientId: 'PonyRemoteControl' + Math.ceil(Math.random() * 1e6),
  username: '',
  password: '',
  protocolVersion: o.protocolVersion || 4,
  reconnectPeriod: 0 // the Go test decides; a reconnect would hide a failure
}
if (o.port) options.port = o.port
if (o.ca) options.ca = fs.readFileSync(o.ca)

const client = mqtt.connect(o.url, options)
client.on('connect', (connack) => {
  emit({ event: 'connect', sessionPresent: connack.sessionPresent })
  client.subscribe(o.sub, { qos: 0 }, (err, granted) => {
    if (err) {
      emit({ event: 'error', where: 'subscribe', message: String(err.message) })
      return
    }
    emit({ event: 'subscribed', granted: granted.map(g => g.qos) })
  })
})
client.on('message', (topic, message) => {
  emit({ event: 'message', topic, payload: message.toString() })
  client.publish(o.pub, 'echo:' + message.toString(), { qos: 1 }, (err) => {
    emit(err ? { event: 'error', where: 'publish', message: String(err.message) } : { event: 'published' })
  })
})
client.on('reconnect', () => emit({ event: 'reconnect' }))
client.on('error', (err) => emit({ event: 'error', message: String(err && err.message) }))
client.on('close', () => emit({ event: 'close' }))
process.stdin.on('end', () => client.end(false, () => process.exit(0)))
process.stdin.resume()
