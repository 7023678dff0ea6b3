// A small dependency-free SVG line chart for the dashboard.
const NS = 'http://www.w3.org/2000/svg'

function svg (tag, attrs) {
  const e = document.createElementNS(NS, tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v)
  return e
}

// niceMax rounds v up to 1, 2 or 5 times a power of ten.
function niceMax (v) {
  if (v <= 0) return 1
  const p = Math.pow(10, Math.floor(Math.log10(v)))
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p
  return 10 * p
}

function fmt (v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + 'M'
  if (v >= 1e3) return (v / 1e3).toFixed(1) + 'k'
  return Number.isInteger(v) ? String(v) : v.toFixed(1)
}

// draw renders series ([{name, color, values}], values oldest first, one
// per sample) into the svg element el, keeping room for capacity samples.
export function draw (el, series, capacity) {
  const W = 600; const H = 200; const L = 44; const R = 8; const T = 10; const B = 20
  el.setAttribute('viewBox', `0 0 ${W} ${H}`)
  el.setAttribute('preserveAspectRatio', 'none')
  el.replaceChildren()
  const max = niceMax(Math.max(0, ...series.flatMap(s => s.values)))
  const x = i => L + (W - L - R) * (i / Math.max(1, capacity - 1))
  const y = v => T + (H - T - B) * (1 - v / max)
  for (let k = 0; k <= 4; k++) {
    const v = max * k / 4
    el.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#e3e6eb', 'stroke-width': 1 }))
    const t = svg('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end', 'font-size': 11, fill: '#6b7280' })
    t.textContent = fmt(v)
    el.append(t)
  }
  const label = svg('text', { x: W - R, y: H - 4, 'text-anchor': 'end', 'font-size': 11, fill: '#6b7280' })
  label.textContent = 'now'
  el.append(label)
  for (const s of series) {
    const off = capacity - s.values.length
    const pts = s.values.map((v, i) => `${x(i + off).toFixed(1)},${y(v).toFixed(1)}`)
    if (pts.length === 0) continue
    if (pts.length > 1) {
      const area = `M${x(off)},${y(0)} L${pts.join(' L')} L${x(capacity - 1)},${y(0)} Z`
      el.append(svg('path', { d: area, fill: s.color, 'fill-opacity': 0.08 }))
    }
    el.append(svg('polyline', { points: pts.join(' '), fill: 'none', stroke: s.color, 'stroke-width': 2, 'vector-effect': 'non-scaling-stroke' }))
  }
}
