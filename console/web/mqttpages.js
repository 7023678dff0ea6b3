// The live message view and the MQTT client page: mqtt.js's browser build
// (window.mqtt) over the broker's WebSocket listener, the same library and
// flow as a WeChat mini program: connect, subscribe, publish, on message.
import { h, api } from './util.js'

// wsURL picks the broker's WebSocket listener the page can reach: wss://
// when the console itself came over https (browsers refuse ws:// there),
// with an unspecified listen host replaced by the console's own host.
async function wsURL () {
  const { websockets } = await api('console')
  const secure = location.protocol === 'https:'
  const pick = websockets.find(u => u.startsWith(secure ? 'wss:' : 'ws:')) || websockets[0]
  if (!pick) return ''
  const u = new URL(pick)
  if (['0.0.0.0', '[::]', '::', ''].includes(u.hostname)) u.hostname = location.hostname
  return u.toString()
}

const noWebSocket = () => h('div', { class: 'notice', id: 'no-ws' },
  'The broker has no WebSocket listener, so the browser cannot speak MQTT to it. Add one, e.g. ',
  h('code', {}, 'roost serve --listen mqtt://0.0.0.0:1883 --listen ws://0.0.0.0:8083/mqtt'),
  ', or enter the URL of one below.')

function payloadText (buf) {
  try { return new TextDecoder('utf-8', { fatal: true }).decode(buf) } catch { return `(binary, ${buf.length} bytes)` }
}

function msgLine (topic, payload, packet) {
  return h('div', { class: 'msg' },
    h('span', { class: 'meta' }, new Date().toLocaleTimeString(), ` · QoS ${packet.qos}`, packet.retain ? ' · retained' : '', ' '),
    h('span', { class: 'topic' }, topic), h('div', { class: 'payload' }, payloadText(payload)))
}

const LOG_MAX = 500

function append (log, line) {
  log.prepend(line)
  while (log.childElementCount > LOG_MAX) log.lastElementChild.remove()
}

function randomID (prefix) { return prefix + Math.random().toString(16).slice(2, 10) }

// ---- live messages --------------------------------------------------------

export function livePage (view) {
  const filter = h('input', { value: '#', size: 30, id: 'live-filter' })
  const url = h('input', { size: 36, id: 'live-url', placeholder: 'ws://host:port/mqtt' })
  const state = h('span', { class: 'pill idle' }, 'idle')
  const log = h('div', { class: 'panel log', id: 'live-log' })
  const notice = h('div')
  let client = null
  const stop = () => { if (client) client.end(true); client = null; state.className = 'pill idle'; state.textContent = 'idle' }
  const start = () => {
    stop()
    log.replaceChildren()
    client = window.mqtt.connect(url.value, { clientId: randomID('roost-live-'), protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 4000 })
    const c = client
    c.on('connect', () => {
      state.className = 'pill ok'; state.textContent = 'watching ' + filter.value
      c.subscribe(filter.value, { qos: 0 }, err => { if (err) append(log, h('div', { class: 'msg' }, 'subscribe failed: ' + err.message)) })
    })
    c.on('message', (topic, payload, packet) => append(log, msgLine(topic, payload, packet)))
    c.on('error', err => { state.className = 'pill bad'; state.textContent = err.message })
    c.on('close', () => { if (client === c) { state.className = 'pill bad'; state.textContent = 'closed' } })
  }
  view.append(h('h2', {}, 'Live messages'),
    h('p', { class: 'muted' }, 'Messages on a topic filter as they are published, through a WebSocket MQTT connection from this page. ',
      h('code', {}, '#'), ' does not match $SYS topics; subscribe to ', h('code', {}, '$SYS/#'), ' for those.'),
    notice,
    h('div', { class: 'row' }, 'Filter', filter, 'Broker', url, h('button', { onclick: start }, 'Watch'),
      h('button', { class: 'secondary', onclick: stop }, 'Stop'), state),
    log)
  wsURL().then(u => { url.value = u; if (!u) notice.replaceChildren(noWebSocket()) })
  return stop
}

// ---- MQTT client -------------------------------------------------------------

// The client page's connection outlives the page, so that a developer can
// look at the dashboard and come back to a connected client.
let session = null

export function mqttPage (view) {
  const s = session || (session = { client: null, log: h('div', { class: 'panel log', id: 'mqtt-log' }), state: h('span', { class: 'pill idle', id: 'mqtt-state' }, 'disconnected') })
  const url = h('input', { size: 34, id: 'mqtt-url', placeholder: 'ws://host:port/mqtt' })
  const clientId = h('input', { size: 22, id: 'mqtt-client-id', value: randomID('roost-console-') })
  const user = h('input', { size: 12, id: 'mqtt-user', placeholder: 'username' })
  const pass = h('input', { size: 12, id: 'mqtt-pass', type: 'password', placeholder: 'password' })
  const version = h('select', { id: 'mqtt-version' }, h('option', { value: '5' }, 'MQTT 5'), h('option', { value: '4' }, 'MQTT 3.1.1'))
  const subTopic = h('input', { size: 28, id: 'sub-topic', value: 'roost/console/#' })
  const subQos = qosSelect('sub-qos')
  const pubTopic = h('input', { size: 28, id: 'pub-topic', value: 'roost/console/hello' })
  const pubQos = qosSelect('pub-qos')
  const pubRetain = h('input', { type: 'checkbox', id: 'pub-retain' })
  const pubPayload = h('textarea', { id: 'pub-payload' }, 'hello from the Roost console')
  const notice = h('div')
  const note = text => append(s.log, h('div', { class: 'msg meta' }, new Date().toLocaleTimeString(), ' ', text))
  const setState = (cls, text) => { s.state.className = 'pill ' + cls; s.state.textContent = text }

  const connect = () => {
    if (s.client) s.client.end(true)
    const opts = { clientId: clientId.value, protocolVersion: Number(version.value), connectTimeout: 4000, reconnectPeriod: 0, clean: true }
    if (user.value) opts.username = user.value
    if (pass.value) opts.password = pass.value
    setState('idle', 'connecting')
    const c = s.client = window.mqtt.connect(url.value, opts)
    c.on('connect', () => { setState('ok', 'connected'); note(`connected to ${url.value} as ${opts.clientId}`) })
    c.on('message', (topic, payload, packet) => append(s.log, msgLine(topic, payload, packet)))
    c.on('error', err => { setState('bad', 'error'); note('error: ' + err.message) })
    c.on('close', () => { if (s.client === c) { setState('bad', 'disconnected'); note('connection closed') } })
  }
  const disconnect = () => { if (s.client) { const c = s.client; s.client = null; c.end(); setState('idle', 'disconnected'); note('disconnected') } }
  const subscribe = () => {
    if (!s.client) return note('connect first')
    s.client.subscribe(subTopic.value, { qos: Number(subQos.value) }, (err, granted) => {
      if (err) return note('subscribe failed: ' + err.message)
      for (const g of granted || []) note(g.qos >= 128 ? `subscribe to ${g.topic} refused (0x${g.qos.toString(16)})` : `subscribed to ${g.topic} (QoS ${g.qos})`)
    })
  }
  const unsubscribe = () => { if (s.client) s.client.unsubscribe(subTopic.value, err => note(err ? 'unsubscribe failed: ' + err.message : `unsubscribed from ${subTopic.value}`)) }
  const publish = () => {
    if (!s.client) return note('connect first')
    const qos = Number(pubQos.value)
    s.client.publish(pubTopic.value, pubPayload.value, { qos, retain: pubRetain.checked }, err =>
      note(err ? 'publish failed: ' + err.message : `published to ${pubTopic.value} (QoS ${qos}${pubRetain.checked ? ', retained' : ''})`))
  }

  view.append(h('h2', {}, 'MQTT client'),
    h('p', { class: 'muted' }, 'mqtt.js in this page, over the broker\'s WebSocket listener: the same library and calls as a WeChat mini program (mqtt.connect, subscribe, publish, on message).'),
    notice,
    h('div', { class: 'panel', style: 'margin-bottom:12px' },
      h('div', { class: 'row' }, 'Broker', url, 'Client id', clientId, user, pass, version),
      h('div', { class: 'row', style: 'margin:0' }, h('button', { id: 'mqtt-connect', onclick: connect }, 'Connect'),
        h('button', { class: 'secondary', id: 'mqtt-disconnect', onclick: disconnect }, 'Disconnect'), s.state)),
    h('div', { class: 'grid2', style: 'margin-bottom:12px' },
      h('div', { class: 'panel' }, h('h3', {}, 'Subscribe'),
        h('div', { class: 'row' }, subTopic, subQos, h('button', { id: 'sub-btn', onclick: subscribe }, 'Subscribe'),
          h('button', { class: 'secondary', onclick: unsubscribe }, 'Unsubscribe'))),
      h('div', { class: 'panel' }, h('h3', {}, 'Publish'),
        h('div', { class: 'row' }, pubTopic, pubQos, h('label', {}, pubRetain, 'retain'), h('button', { id: 'pub-btn', onclick: publish }, 'Publish')),
        pubPayload)),
    h('h3', {}, 'Messages and events'), s.log)
  wsURL().then(u => { url.value = u; if (!u) notice.replaceChildren(noWebSocket()) }).catch(err => note(err.message))
}

function qosSelect (id) {
  return h('select', { id }, [0, 1, 2].map(q => h('option', { value: q }, `QoS ${q}`)))
}
