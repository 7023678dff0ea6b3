// Helpers shared by the console's pages.

// h builds an element; strings become text nodes, never HTML, because
// client ids, topics and payloads come from clients.
export function h (tag, attrs = {}, ...children) {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v)
    else if (k === 'value') e.value = v
    else if (k === 'style') e.style.cssText = v // CSSOM: allowed by the CSP, unlike style=""
    else e.setAttribute(k, v === true ? '' : v)
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue
    e.append(c instanceof Node ? c : document.createTextNode(String(c)))
  }
  return e
}

export async function api (path, opts = {}) {
  const res = await fetch('api/' + path, { credentials: 'same-origin', ...opts })
  const body = await res.json().catch(() => ({}))
  if (!res.ok) throw new Error(body.error || `${res.status} ${res.statusText}`)
  return body
}
