// Roost console: a hash-routed single page over the admin API.
import { draw } from './chart.js'
import { livePage, mqttPage } from './mqttpages.js'
import { h, api } from './util.js'

// ---- stats history, kept while the console is open ----------------------

const POLL_MS = 2000
const CAPACITY = 150 // five minutes of samples
const history = { connected: [], inRate: [], outRate: [], dropRate: [] }
let last = null
let latest = null
const statsListeners = new Set()

const sum = a => a.reduce((x, y) => x + y, 0)
const push = (arr, v) => { arr.push(v); if (arr.length > CAPACITY) arr.shift() }

async function pollStats () {
  try {
    const s = await api('stats')
    const dropped = sum(Object.values(s.dropped || {}))
    if (last) {
      const dt = (new Date(s.time) - new Date(last.time)) / 1000 || POLL_MS / 1000
      push(history.inRate, Math.max(0, (sum(s.messages_received) - sum(last.messages_received)) / dt))
      push(history.outRate, Math.max(0, (sum(s.messages_sent) - sum(last.messages_sent)) / dt))
      push(history.dropRate, Math.max(0, (dropped - last.droppedSum) / dt))
    }
    push(history.connected, s.connected)
    s.droppedSum = dropped
    last = latest = s
    document.getElementById('status').textContent = `${s.connected} connected · up ${duration(s.uptime_seconds)}`
    for (const f of statsListeners) f(s)
  } catch (err) {
    document.getElementById('status').textContent = 'stats: ' + err.message
  }
}

export function duration (sec) {
  sec = Math.floor(sec)
  const d = Math.floor(sec / 86400); const hr = Math.floor(sec / 3600) % 24
  const m = Math.floor(sec / 60) % 60; const s = sec % 60
  if (d) return `${d}d ${hr}h`
  if (hr) return `${hr}h ${m}m`
  if (m) return `${m}m ${s}s`
  return `${s}s`
}

// ---- pages ---------------------------------------------------------------

function dashboard (view) {
  const cards = h('div', { class: 'cards' })
  const connSvg = document.createElementNS('http://www.w3.org/2000/svg', 'svg')
  const rateSvg = document.createElementNS('http://www.w3.org/2000/svg', 'svg')
  const legend = items => h('div', { class: 'legend' }, items.map(([n, c]) => h('span', {}, h('i', { style: `background:${c}` }), n)))
  view.append(
    h('h2', {}, 'Dashboard'), cards,
    h('div', { class: 'charts' },
      h('div', { class: 'panel chart' }, h('h3', {}, 'Connections'), connSvg, legend([['connected clients', '#2f6fdf']])),
      h('div', { class: 'panel chart' }, h('h3', {}, 'Messages per second'), rateSvg,
        legend([['received', '#2f6fdf'], ['sent', '#e07b24'], ['dropped', '#c93434']]))))
  const card = (label, value) => h('div', { class: 'card' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value))
  const render = s => {
    cards.replaceChildren(
      card('Connected', s.connected), card('Sessions', s.sessions), card('Subscriptions', s.subscriptions),
      card('Retained', s.retained), card('Inflight', s.inflight), card('Queued', s.queued),
      card('Received', sum(s.messages_received)), card('Sent', sum(s.messages_sent)), card('Dropped', s.droppedSum))
    // The window grows with the history up to CAPACITY samples.
    const width = Math.min(CAPACITY, Math.max(10, history.connected.length))
    draw(connSvg, [{ color: '#2f6fdf', values: history.connected }], width)
    draw(rateSvg, [{ color: '#2f6fdf', values: history.inRate }, { color: '#e07b24', values: history.outRate },
      { color: '#c93434', values: history.dropRate }], width)
  }
  if (latest) render(latest)
  statsListeners.add(render)
  return () => statsListeners.delete(render)
}

function when (t) { return t ? new Date(t).toLocaleString() : '' }

function clients (view) {
  const search = h('input', { type: 'search', placeholder: 'search id, user or address', id: 'client-search' })
  const onlyOnline = h('input', { type: 'checkbox' })
  const info = h('span', { class: 'muted' })
  const body = h('tbody')
  const detail = h('div')
  view.append(h('h2', {}, 'Clients'),
    h('div', { class: 'row' }, search, h('label', {}, onlyOnline, 'connected only'), info),
    h('table', { id: 'clients' }, h('thead', {}, h('tr', {}, ['Client id', 'Address', 'Protocol', 'Keep alive', 'Connected since']
      .map(t => h('th', {}, t)), ['Inflight', 'Queued', 'Subs'].map(t => h('th', { class: 'num' }, t)), h('th'))), body),
    detail)
  const disconnect = async (id, end) => {
    if (!confirm(`${end ? 'End the session of' : 'Disconnect'} ${id}?`)) return
    await api('clients/' + encodeURIComponent(id) + (end ? '?end_session=true' : ''), { method: 'DELETE' })
    load()
  }
  const show = async id => {
    const d = await api('clients/' + encodeURIComponent(id))
    const c = d.client
    detail.replaceChildren(h('div', { class: 'panel', style: 'margin-top:12px' },
      h('h3', {}, 'Client ', c.client_id),
      h('p', { class: 'muted' }, `user ${c.username || '(none)'} · listener ${c.listener || '(unnamed)'} · session expiry ${c.session_expiry}s · dropped ${c.dropped}`),
      h('div', { class: 'row' },
        h('button', { class: 'danger', onclick: () => disconnect(c.client_id, false), disabled: !c.connected }, 'Disconnect'),
        h('button', { class: 'danger', onclick: () => disconnect(c.client_id, true) }, 'End session')),
      d.subscriptions.length === 0
        ? h('p', { class: 'muted' }, 'No subscriptions.')
        : h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Filter'), h('th', { class: 'num' }, 'QoS'), h('th', {}, 'Options'))),
          h('tbody', {}, d.subscriptions.map(s => h('tr', {}, h('td', {}, s.filter), h('td', { class: 'num' }, s.qos),
            h('td', {}, [s.no_local && 'no local', s.retain_as_published && 'retain as published',
              s.retain_handling && `retain handling ${s.retain_handling}`, s.subscription_id && `id ${s.subscription_id}`].filter(Boolean).join(', ')))))))
    )
  }
  const load = async () => {
    const q = new URLSearchParams({ q: search.value, limit: 500 })
    if (onlyOnline.checked) q.set('connected', 'true')
    const d = await api('clients?' + q)
    info.textContent = d.total > d.clients.length ? `${d.clients.length} of ${d.total}` : `${d.total} clients`
    body.replaceChildren(...d.clients.map(c => h('tr', { class: c.connected ? '' : 'offline', 'data-client': c.client_id },
      h('td', {}, h('a', { href: '#/clients', onclick: e => { e.preventDefault(); show(c.client_id) } }, c.client_id)),
      h('td', {}, c.address || ''), h('td', {}, c.protocol || ''), h('td', {}, c.connected ? `${c.keep_alive}s` : ''),
      h('td', {}, c.connected ? when(c.connected_since) : h('span', { class: 'pill idle' }, 'offline')),
      h('td', { class: 'num' }, c.inflight), h('td', { class: 'num' }, c.queued), h('td', { class: 'num' }, c.subscriptions),
      h('td', {}, c.connected && h('button', { class: 'danger', onclick: () => disconnect(c.client_id, false) }, 'Disconnect')))))
  }
  search.addEventListener('input', load)
  onlyOnline.addEventListener('change', load)
  load().catch(err => { info.textContent = err.message })
  const timer = setInterval(() => load().catch(() => {}), 5000)
  return () => clearInterval(timer)
}

function topics (view) {
  const filter = h('input', { value: '#', size: 30, id: 'retained-filter' })
  const tree = h('div', { class: 'panel tree', id: 'topic-tree' })
  const detail = h('div', { class: 'panel', id: 'retained-detail' }, h('p', { class: 'muted' }, 'Choose a topic.'))
  const info = h('span', { class: 'muted' })
  view.append(h('h2', {}, 'Topics'), h('p', { class: 'muted' }, 'Retained messages by topic level.'),
    h('div', { class: 'row' }, 'Filter', filter, h('button', { onclick: () => load() }, 'Browse'), info),
    h('div', { class: 'split' }, tree, detail))
  let selected = null
  const showMsg = (m, el) => {
    if (selected) selected.classList.remove('sel')
    selected = el; el.classList.add('sel')
    const payload = m.payload !== undefined ? m.payload : `(binary, base64) ${m.payload_base64}`
    detail.replaceChildren(h('h3', {}, m.topic),
      h('p', { class: 'muted' }, `QoS ${m.qos} · ${m.size} bytes · received ${when(m.received)}${m.expires ? ' · expires ' + when(m.expires) : ''}`),
      h('pre', { class: 'payload', id: 'retained-payload' }, payload),
      h('button', {
        class: 'danger',
        onclick: async () => {
          if (!confirm(`Delete the retained message on ${m.topic}?`)) return
          await api('retained?' + new URLSearchParams({ topic: m.topic }), { method: 'DELETE' })
          detail.replaceChildren(h('p', { class: 'muted' }, 'Deleted.')); load()
        }
      }, 'Delete retained'))
  }
  const render = (node) => h('ul', {}, [...node.kids.keys()].sort().map(name => {
    const k = node.kids.get(name)
    const label = h('span', { class: 'node' + (k.msg ? ' has' : ''), 'data-topic': k.msg ? k.msg.topic : null },
      name === '' ? '(empty)' : name, k.kids.size ? ` (${k.count})` : '')
    if (k.msg) label.addEventListener('click', () => showMsg(k.msg, label))
    return h('li', {}, label, k.kids.size ? render(k) : null)
  }))
  const load = async () => {
    const d = await api('retained?' + new URLSearchParams({ filter: filter.value, limit: 10000 }))
    const root = { kids: new Map(), count: 0 }
    for (const m of d.messages) {
      let n = root
      for (const level of m.topic.split('/')) {
        n.count++
        if (!n.kids.has(level)) n.kids.set(level, { kids: new Map(), count: 0 })
        n = n.kids.get(level)
      }
      n.msg = m
    }
    info.textContent = `${d.messages.length} retained`
    tree.replaceChildren(d.messages.length ? render(root) : h('p', { class: 'muted' }, 'No retained messages match.'))
  }
  filter.addEventListener('keydown', e => { if (e.key === 'Enter') load() })
  load().catch(err => { info.textContent = err.message })
}

function bridges (view) {
  const info = h('span', { class: 'muted' })
  const body = h('tbody')
  const editor = h('div', { class: 'panel', id: 'bridge-editor', hidden: true })
  view.append(h('h2', {}, 'Bridges'),
    h('div', { class: 'row' }, info, h('button', { id: 'bridge-add', onclick: () => edit(null) }, 'Add bridge')), editor,
    h('table', { id: 'bridges' }, h('thead', {}, h('tr', {}, ['Bridge', 'State', 'Remote']
      .map(t => h('th', {}, t)), ['Out', 'In', 'Queued', 'Dropped', 'Reconnects'].map(t => h('th', { class: 'num' }, t)),
    h('th', {}, 'Last error'), h('th', {}, ''))), body))
  // The editor takes a bridges: entry as JSON, the keys of docs/config.md;
  // the server checks it and answers what is wrong.
  const edit = async (name) => {
    let text = JSON.stringify({ name: 'cloud', addresses: ['mqtts://broker.example.com:8883'], topics: ['sensors/# out 1'] }, null, 2)
    let note = 'A new bridge: a bridges: entry of roost.yaml, as JSON (docs/bridges.md).'
    if (name) {
      const d = await api('bridges/' + encodeURIComponent(name))
      text = JSON.stringify(d.config, null, 2)
      note = d.has_password ? 'The password is kept unless you give one ("password": "" clears it).' : ''
    }
    const area = h('textarea', { id: 'bridge-json', rows: 14, cols: 80, spellcheck: 'false' })
    area.value = text
    const error = h('p', { class: 'error', id: 'bridge-error' })
    const save = async () => {
      error.textContent = ''
      try {
        const opts = { method: name ? 'PUT' : 'POST', headers: { 'Content-Type': 'application/json' }, body: area.value }
        await api(name ? 'bridges/' + encodeURIComponent(name) : 'bridges', opts)
        editor.hidden = true
        load()
      } catch (err) { error.textContent = err.message }
    }
    editor.replaceChildren(h('h3', {}, name ? 'Bridge ' + name : 'Add a bridge'), h('p', { class: 'muted' }, note), area,
      h('div', { class: 'row' }, h('button', { id: 'bridge-save', onclick: save }, 'Save'),
        h('button', { onclick: () => { editor.hidden = true } }, 'Cancel')), error)
    editor.hidden = false
  }
  const remove = async (name) => {
    if (!confirm(`Stop and remove the bridge ${name}? What is still queued for it is dropped.`)) return
    try { await api('bridges/' + encodeURIComponent(name), { method: 'DELETE' }) } catch (err) { info.textContent = err.message }
    load()
  }
  const actions = b => b.source === 'api'
    ? [h('button', { onclick: () => edit(b.name).catch(err => { info.textContent = err.message }) }, 'Edit'),
        h('button', { class: 'danger', onclick: () => remove(b.name) }, 'Remove')]
    : (b.source === 'file' ? h('span', { class: 'muted', title: 'Change it in the configuration file and send SIGHUP' }, 'from file') : '')
  const load = async () => {
    const list = await api('bridges')
    info.textContent = list.length ? `${list.length} bridge${list.length === 1 ? '' : 's'}` : 'No bridges: add one, or see docs/bridges.md.'
    body.replaceChildren(...list.map(b => h('tr', { class: b.connected ? '' : 'offline', 'data-bridge': b.name },
      h('td', {}, b.name),
      h('td', {}, h('span', { class: 'pill ' + (b.connected ? 'ok' : 'idle') }, b.connected ? 'connected' : 'disconnected')),
      h('td', {}, b.server || ''),
      h('td', { class: 'num' }, b.forwarded_out), h('td', { class: 'num' }, b.forwarded_in),
      h('td', { class: 'num' }, b.queued), h('td', { class: 'num' }, b.dropped + b.queue_dropped),
      h('td', { class: 'num' }, b.reconnects),
      h('td', { title: b.last_error_at ? when(b.last_error_at) : '' }, b.last_error || ''),
      h('td', {}, actions(b)))))
  }
  load().catch(err => { info.textContent = err.message })
  const timer = setInterval(() => load().catch(() => {}), POLL_MS)
  return () => clearInterval(timer)
}

// The cluster page: this node's view (GET /api/cluster); every node has its
// own console, and each tells what it sees.
function clusterPage (view) {
  const info = h('span', { class: 'muted' })
  const cards = h('div', { class: 'cards' })
  const nodes = h('tbody')
  const fwd = h('tbody')
  view.append(h('h2', {}, 'Cluster'), h('div', { class: 'row' }, info), cards,
    h('h3', {}, 'Nodes'),
    h('table', { id: 'cluster-nodes' }, h('thead', {}, h('tr', {}, ['Node', 'State'].map(t => h('th', {}, t)),
      ['Last heard', 'Interest entries'].map(t => h('th', { class: 'num' }, t)))), nodes),
    h('h3', {}, 'Forwarded messages'),
    h('table', { id: 'cluster-forwards' }, h('thead', {}, h('tr', {}, h('th', {}, 'QoS'),
      ['Sent', 'Received', 'Failed', 'Timed out'].map(t => h('th', { class: 'num' }, t)))), fwd))
  const card = (label, value) => h('div', { class: 'card' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value))
  const pill = (ok, yes, no) => h('span', { class: 'pill ' + (ok ? 'ok' : 'bad') }, ok ? yes : no)
  const load = async () => {
    let c
    try {
      c = await api('cluster')
    } catch (err) {
      info.textContent = err.message === 'not a cluster node' ? 'This broker runs alone: see docs/cluster.md to make it a cluster node.' : err.message
      return
    }
    const reachable = c.nodes.length + 1
    info.textContent = `cluster ${c.name} · this node ${c.node}`
    const avg = c.forward_latency_count ? `${(1000 * c.forward_latency_sum_seconds / c.forward_latency_count).toFixed(2)} ms` : '–'
    cards.replaceChildren(
      card('Nodes reachable', `${reachable} of ${c.configured}`), card('Routes', c.routed.length),
      card('JetStream', c.jetstream.current ? 'current' : 'not current'), card('Meta leader', c.jetstream.meta_leader || 'none'),
      card('Ownership', c.ownership.ready ? 'ready' : 'not ready'), card('Claims', c.ownership.claims),
      card('Retained stream', `${c.retained.stream_messages} msgs`), card('Interest entries', c.interest_entries),
      card('Forward round trip', avg))
    const self = h('tr', { 'data-node': c.node }, h('td', {}, c.node, h('span', { class: 'muted' }, ' (this node)')),
      h('td', {}, pill(c.jetstream.current, 'up', 'engine not current')), h('td', { class: 'num' }, ''),
      h('td', { class: 'num' }, c.interest_entries))
    nodes.replaceChildren(self, ...c.nodes.map(n => h('tr', { 'data-node': n.name },
      h('td', {}, n.name), h('td', {}, pill(true, n.synced ? 'reachable' : 'reachable, syncing', ''),
        c.routed.includes(n.name) ? '' : h('span', { class: 'pill idle' }, 'no route')),
      h('td', { class: 'num' }, `${(n.last_heard_ns / 1e9).toFixed(1)} s ago`), h('td', { class: 'num' }, n.interest_entries))))
    fwd.replaceChildren(...c.forwards.map((f, q) => h('tr', {}, h('td', {}, q),
      h('td', { class: 'num' }, f.sent), h('td', { class: 'num' }, f.received), h('td', { class: 'num' }, f.failed),
      h('td', { class: 'num' }, q ? f.timed_out : ''))))
  }
  load().catch(err => { info.textContent = err.message })
  const timer = setInterval(() => load().catch(() => {}), POLL_MS)
  return () => clearInterval(timer)
}

// ---- router ----------------------------------------------------------------

const pages = { '': dashboard, clients, topics, bridges, cluster: clusterPage, live: livePage, mqtt: mqttPage }
let leave = null

function route () {
  const name = location.hash.replace(/^#\/?/, '').split('?')[0]
  const page = pages[name] || dashboard
  if (leave) leave()
  const view = document.getElementById('view')
  view.replaceChildren()
  for (const a of document.querySelectorAll('header nav a')) {
    a.classList.toggle('active', a.getAttribute('href') === '#/' + name)
  }
  leave = page(view) || null
}

window.addEventListener('hashchange', route)
route()
pollStats()
setInterval(pollStats, POLL_MS)
