'use strict'
// One mqtt.js client configured like the WeChat mini program seed
// (connectTimeout 4000, clientId 'PonyRemoteControl'+n, subscribe only
// after the connect event), reporting what happens to it as plain event
// objects. client.js runs one in a node process of its own; hub.js runs
// many in one process, since starting node with mqtt.js loaded costs far
// more CPU than a client does.
//
// open(opts, emit) connects and returns { handle, close, kill }.
//   opts: url (mqtt://, mqtts://, ws://, wss://), caFile (the CA that
//         mqtts:// and wss:// servers are verified against),
//         protocolVersion (4|5), clientId, clean, keepalive,
//         properties (CONNECT), will, subscribe: [{topic, qos, nl, rap}],
//         subscribeProperties,
//         reconnectPeriod (ms, default 0: no automatic reconnect),
//         connectTimeout (ms, default the program's 4000),
//         servers: [{host, port}] (tried in turn at each reconnect,
//         with url's protocol and path; the first is connected first),
//         reconnectOnConnackError (keep reconnecting after a refused
//         CONNACK, which otherwise stops mqtt.js's reconnects for good)
//   handle(command) takes one command object:
//     {"cmd":"publish","id":1,"topic":"t","payload":"p","qos":1,"retain":false,"properties":{}}
//     {"cmd":"subscribe","id":2,"subscribe":[{"topic":"t","qos":1}],"properties":{}}
//     {"cmd":"end","reasonCode":0}  (DISCONNECT with that reason, then "ended")
//   close(done): DISCONNECT if still connected, then done().
//   kill(): drop the connection as a killed process would: no DISCONNECT,
//         no WebSocket close frame, no TLS close_notify.
// Events: connect, suback, message, published, disconnect (server
// DISCONNECT), close, reconnect, error, ended. The subscriptions are made
// after the first connect only: a reconnecting client that lost its
// session is seen (connect with sessionPresent false), not hidden by a
// new subscription.

const fs = require('fs')
const mqtt = require('mqtt')

function open (opts, emit) {
  const connectOpts = {
    protocolVersion: opts.protocolVersion || 4,
    clientId: opts.clientId || 'PonyRemoteControl' + Math.floor(Math.random() * 1e9),
    clean: opts.clean !== false,
    keepalive: opts.keepalive === undefined ? 60 : opts.keepalive,
    connectTimeout: opts.connectTimeout || 4000,
    // The Go test decides about reconnecting unless it asks for mqtt.js's
    // own (a WeChat mini program's setting): an automatic reconnect would
    // fight a takeover and hide a dropped connection.
    reconnectPeriod: opts.reconnectPeriod || 0,
    resubscribe: false
  }
  if (opts.properties) connectOpts.properties = opts.properties
  if (opts.will) connectOpts.will = opts.will
  if (opts.caFile) connectOpts.ca = fs.readFileSync(opts.caFile)
  if (opts.servers) connectOpts.servers = opts.servers
  if (opts.reconnectOnConnackError) connectOpts.reconnectOnConnackError = true

  const client = mqtt.connect(opts.url, connectOpts)

  function subscribe (id, subs, properties) {
    const map = {}
    for (const s of subs) {
      map[s.topic] = { qos: s.qos || 0 }
      if (s.nl !== undefined) map[s.topic].nl = s.nl
      if (s.rap !== undefined) map[s.topic].rap = s.rap
    }
    const subOpts = properties ? { properties } : {}
    client.subscribe(map, subOpts, (err, granted) => {
      if (err) {
        emit({ event: 'error', id, where: 'subscribe', message: String(err && err.message) })
        return
      }
      emit({ event: 'suback', id, granted: (granted || []).map(g => ({ topic: g.topic, qos: g.qos })) })
    })
  }

  let subscribed = false
  client.on('connect', (connack) => {
    emit({
      event: 'connect',
      sessionPresent: !!connack.sessionPresent,
      reasonCode: connack.reasonCode || connack.returnCode || 0,
      properties: connack.properties || {}
    })
    if (!subscribed && opts.subscribe && opts.subscribe.length > 0) {
      subscribed = true
      subscribe(0, opts.subscribe, opts.subscribeProperties)
    }
  })
  client.on('reconnect', () => emit({ event: 'reconnect' }))

  client.on('message', (topic, payload, packet) => {
    const props = packet.properties || {}
    let subIds = props.subscriptionIdentifier
    if (subIds !== undefined && !Array.isArray(subIds)) subIds = [subIds]
    emit({
      event: 'message',
      topic,
      payload: payload.toString('utf8'),
      qos: packet.qos,
      retain: !!packet.retain,
      dup: !!packet.dup,
      subIds: subIds || [],
      expiry: props.messageExpiryInterval === undefined ? null : props.messageExpiryInterval
    })
  })

  client.on('disconnect', (packet) => {
    emit({ event: 'disconnect', reasonCode: packet.reasonCode || 0 })
  })
  client.on('close', () => emit({ event: 'close' }))
  client.on('error', (err) => emit({ event: 'error', where: 'client', message: String(err && err.message), code: err && err.code }))

  function handle (c) {
    switch (c.cmd) {
      case 'publish': {
        const pubOpts = { qos: c.qos || 0, retain: !!c.retain }
        if (c.properties) pubOpts.properties = c.properties
        client.publish(c.topic, c.payload || '', pubOpts, (err) => {
          if (err) emit({ event: 'error', id: c.id, where: 'publish', message: String(err.message) })
          else emit({ event: 'published', id: c.id })
        })
        break
      }
      case 'subscribe':
        subscribe(c.id, c.subscribe, c.properties)
        break
      case 'end':
        client.end(false, { reasonCode: c.reasonCode || 0 }, () => emit({ event: 'ended' }))
        break
      default:
        emit({ event: 'error', where: 'command', message: 'unknown cmd ' + c.cmd })
    }
  }

  function kill () {
    // A forced end destroys the stream without sending DISCONNECT; over
    // WebSocket that terminates the socket (no close frame), over TLS it
    // sends no close_notify. Destroying the stream as well covers a client
    // already disconnecting, which end ignores.
    client.end(true)
    client.stream.destroy()
  }

  return { handle, close: (done) => client.end(false, done), kill }
}

module.exports = { open }
