// The dashboard's page: draws the aggregate the server pushes over one
// EventSource (/api/stream), and sends actions as POSTs to the dashboard's
// own routes after a confirmation. No framework, nothing fetched elsewhere.
'use strict';

const $ = (id) => document.getElementById(id);
let model = null;
let selected = null; // the service ID shown in the detail panel
let logSource = null;
let historyTimer = null;
let servicesKey = '';
let online = false; // whether the daemon answered the dashboard's last read

// ---- small helpers ----------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k.startsWith('data-')) node.dataset[k.slice(5).replace(/-(.)/g, (_, c) => c.toUpperCase())] = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// A stable colour per service name (the visualizer's idea): a hash to a hue.
const colours = new Map();
function colour(name) {
  let c = colours.get(name);
  if (!c) {
    let h = 2166136261;
    for (let i = 0; i < name.length; i++) { h ^= name.charCodeAt(i); h = Math.imul(h, 16777619); }
    // murmur3's finaliser: similar names end far apart.
    h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b); h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35); h ^= h >>> 16;
    h >>>= 0;
    // Twelve hues far apart, then shades of them: neighbours in a list of
    // a few services rarely look alike.
    const hue = (h % 12) * 30 + ((h >> 8) % 3) * 10;
    c = `hsl(${hue}, ${55 + (h >> 12) % 20}%, ${34 + (h >> 20) % 14}%)`;
    colours.set(name, c);
  }
  return c;
}

function bytes(n) {
  if (!n) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function notice(text, error) {
  const n = $('notice');
  n.textContent = text;
  n.className = error ? 'error' : '';
  n.hidden = false;
}

function setBanner(down, why) {
  const b = $('banner');
  online = !down;
  b.hidden = !down;
  b.textContent = down ? `disconnected, retrying${why ? ` (${why})` : ''}` : '';
  document.body.classList.toggle('disconnected', down);
}

// ---- the live stream ----------------------------------------------------

function connect() {
  const es = new EventSource('/api/stream');
  es.addEventListener('status', (e) => {
    const s = JSON.parse(e.data);
    setBanner(!s.connected, s.error);
  });
  es.addEventListener('model', (e) => {
    model = JSON.parse(e.data);
    render();
  });
  es.addEventListener('ev', (e) => addEvent(JSON.parse(e.data)));
  // The browser reconnects by itself; say so meanwhile.
  es.onerror = () => setBanner(true, 'the dashboard does not answer');
}

// ---- drawing --------------------------------------------------------------

function render() {
  const m = model;
  const tasks = m.nodes.reduce((n, node) => n + node.tasks.length, 0) + m.unassigned.length;
  const info = m.info.name ? ` on ${m.info.name} (${m.info.version})` : '';
  $('summary').textContent = `${m.nodes.length} nodes, ${m.services.length} services, ${tasks} tasks${info}`;
  const key = m.services.map((s) => s.id).join(',');
  const rebuild = key !== servicesKey;
  servicesKey = key;
  renderColumns(m, tasks, rebuild);
  renderServices(m);
  renderNodes(m);
  renderDetail(m);
  // How long the first view took, for whoever measures (the tests).
  if (!performance.getEntriesByName('first-view').length) performance.mark('first-view');
}

// Thousands of these: built by hand rather than through el().
function taskBox(m, [svc, state, slot]) {
  const name = m.services[svc].name;
  const stateName = m.states[state];
  const text = slot ? `${name}.${slot}` : name;
  const li = document.createElement('li');
  li.className = `task ${stateName}`;
  li.textContent = text;
  li.title = `${text} ${stateName}`;
  li.setAttribute('aria-label', li.title);
  li.dataset.service = name;
  li.dataset.state = stateName;
  li.style.background = colour(name);
  return li;
}

function column(m, id, title, meta, boxes, node) {
  const list = el('ul', { class: 'tasks', 'aria-label': `Tasks on ${title}` });
  list.append(...boxes.map((b) => taskBox(m, b)));
  const heading = el('h3', {}, el('span', { text: title }),
    node && node.leader ? el('span', { class: 'badge leader', text: 'leader' }) : null,
    node ? el('span', { class: 'badge', text: node.role }) : null);
  const section = el('section', {
    class: `node${node && node.state !== 'ready' ? ' down' : ''}`, 'data-node': title,
    'data-state': node ? node.state : 'pending', 'aria-label': `${title}: ${meta}, ${boxes.length} tasks`,
  }, heading, el('p', { class: 'meta' }, ...metaParts(meta, node)), list);
  if (node) section.append(availabilityButton(node, 'node-actions'));
  section.dataset.id = id;
  return section;
}

function metaParts(meta, node) {
  if (!node) return [meta];
  return [el('span', { class: `state-${node.state}`, text: node.state }), ` · ${node.availability}`,
    node.engine ? ` · ${node.engine}` : '',
    node.cpus ? ` · ${node.cpus} CPU` : '', node.memory ? ` · ${bytes(node.memory)}` : ''];
}

function availabilityButton(node, cls) {
  const drain = node.availability !== 'drain';
  const label = drain ? 'Drain' : 'Activate';
  return el('div', { class: cls }, el('button', {
    type: 'button', 'aria-label': `${label} ${node.hostname}`, 'data-action': label.toLowerCase(),
    onclick: () => act(`${label} node ${node.hostname}?`, `/api/nodes/${node.id}/availability`,
      { availability: drain ? 'drain' : 'active' }),
  }, label));
}

// One column per node; a node's column is redrawn only when what it shows changed.
function renderColumns(m, tasks, rebuild) {
  const box = $('columns');
  box.classList.toggle('dense', tasks > 600);
  const wanted = m.nodes.map((n) => [n.id, n.hostname, '', n.tasks, n]);
  if (m.unassigned.length) wanted.push(['-', 'unassigned', 'no node yet', m.unassigned, null]);
  const old = new Map([...box.children].map((c) => [c.dataset.id, c]));
  const fresh = [];
  for (const [id, title, meta, boxes, node] of wanted) {
    const sig = JSON.stringify([node, boxes.length ? null : 0, meta]);
    let col = old.get(id);
    if (!col || rebuild || col.dataset.sig !== sig) {
      col = column(m, id, title, meta, boxes, node);
      col.dataset.sig = sig;
    }
    fresh.push(col);
  }
  box.replaceChildren(...fresh);
}

function updateText(u) {
  if (!u) return '';
  switch (u.state) {
    case 'updating': return `updating ${u.done} of ${u.total}`;
    case 'paused': return `paused${u.message ? `: ${u.message}` : ''}`;
    case 'completed': return 'completed';
    case 'rollback_started': return `rolling back ${u.done} of ${u.total}`;
    case 'rollback_paused': return `rollback paused${u.message ? `: ${u.message}` : ''}`;
    case 'rollback_completed': return 'rolled back';
    default: return u.state;
  }
}

function renderServices(m) {
  const body = $('services').tBodies[0];
  const old = new Map([...body.rows].map((r) => [r.dataset.id, r]));
  const rows = m.services.map((s) => {
    const sig = JSON.stringify(s);
    let row = old.get(s.id);
    if (row && row.dataset.sig === sig) return row;
    row = el('tr', { 'data-id': s.id, 'data-service': s.name },
      el('td', {}, el('span', { class: 'swatch', 'aria-hidden': 'true' }),
        el('button', { type: 'button', class: 'link', 'aria-label': `Open service ${s.name}`, onclick: () => select(s.id) }, s.name)),
      el('td', { text: s.mode }),
      el('td', { class: s.running < s.desired ? 'short' : '', 'data-replicas': `${s.running}/${s.desired}`, text: `${s.running}/${s.desired}` }),
      el('td', { text: s.image }),
      el('td', { text: s.ports.join(', ') }),
      el('td', { text: s.networks.join(', ') }),
      el('td', { text: updateText(s.update) }),
      el('td', { class: 'problem', text: s.problem || '' }));
    row.querySelector('.swatch').style.background = colour(s.name);
    row.dataset.sig = sig;
    return row;
  });
  body.replaceChildren(...rows);
}

function renderNodes(m) {
  const body = $('nodes').tBodies[0];
  body.replaceChildren(...m.nodes.map((n) => el('tr', { 'data-node': n.hostname },
    el('th', { scope: 'row', text: n.hostname }),
    el('td', { text: n.role + (n.leader ? ' (leader)' : '') }),
    el('td', { text: n.availability }),
    el('td', { class: n.state === 'ready' ? '' : 'short', text: n.state }),
    el('td', { text: n.addr }),
    el('td', { text: n.engine }),
    el('td', { text: n.cpus ? String(n.cpus) : '' }),
    el('td', { text: bytes(n.memory) }),
    el('td', { text: String(n.tasks.length) }),
    el('td', {}, availabilityButton(n, '')))));
}

// ---- a service's panel --------------------------------------------------

function select(id) {
  if (selected !== id) stopLogs();
  selected = id;
  const s = model && model.services.find((x) => x.id === id);
  $('detail').hidden = false;
  $('d-replicas').value = s ? s.desired : '';
  $('d-image').value = s ? s.image : '';
  renderDetail(model);
  loadHistory();
  $('h-detail').scrollIntoView({ block: 'start' });
  $('d-replicas').focus();
}

function renderDetail(m) {
  if (!selected || !m) return;
  const s = m.services.find((x) => x.id === selected);
  if (!s) {
    $('d-summary').textContent = 'This service is gone.';
    return;
  }
  $('d-name').textContent = s.name;
  const parts = [`${s.mode}`, `${s.running}/${s.desired} running`, s.image];
  if (s.update) parts.push(`update: ${updateText(s.update)}`);
  if (s.problem) parts.push(s.problem);
  $('d-summary').textContent = parts.join(' · ');
  // The history follows the model, at most every 2 s.
  if (!historyTimer) historyTimer = setTimeout(() => { historyTimer = null; loadHistory(); }, 2000);
}

async function loadHistory() {
  // Not while the daemon is away: the answer would only be an error.
  if (!selected || !online) return;
  const id = selected;
  let rows;
  try {
    const r = await fetch(`/api/services/${id}/history`);
    if (!r.ok) return;
    rows = await r.json();
  } catch (_) {
    return;
  }
  if (id !== selected) return;
  const name = $('d-name').textContent;
  $('d-history').tBodies[0].replaceChildren(...rows.map((t) => el('tr', { 'data-task': t.id },
    el('th', { scope: 'row', text: `${name}.${t.slot} ${t.id.slice(0, 12)}` }),
    el('td', { text: t.node }),
    el('td', { text: t.image }),
    el('td', { text: t.desired }),
    el('td', { text: t.state }),
    el('td', {}, el('time', { datetime: t.since, text: t.since ? new Date(t.since).toLocaleTimeString() : '' })),
    el('td', { class: 'problem', text: t.error || (t.state === 'running' ? '' : t.message) }),
    el('td', {}, el('button', {
      type: 'button', 'aria-label': `Follow the logs of task ${name}.${t.slot} ${t.id.slice(0, 12)}`,
      onclick: () => followLogs(`/api/tasks/${t.id}/logs`, `of task ${name}.${t.slot}`),
    }, 'Logs')))));
}

function stopLogs() {
  if (logSource) logSource.close();
  logSource = null;
  $('d-logs').setAttribute('aria-pressed', 'false');
  $('d-logs').textContent = "Follow the service's logs";
}

function followLogs(url, what) {
  stopLogs();
  const pre = $('d-log');
  pre.textContent = '';
  $('d-log-source').textContent = what;
  const es = new EventSource(url);
  logSource = es;
  $('d-logs').setAttribute('aria-pressed', 'true');
  $('d-logs').textContent = 'Stop following';
  es.addEventListener('line', (e) => {
    const l = JSON.parse(e.data);
    pre.append(`${l.source} | ${l.text}\n`);
    while (pre.childNodes.length > 2000) pre.firstChild.remove();
    pre.scrollTop = pre.scrollHeight;
  });
  es.addEventListener('failure', (e) => {
    pre.append(`${e.data}\n`);
    stopLogs();
  });
}

// ---- actions ----------------------------------------------------------------

function confirmDialog(text) {
  const d = $('confirm');
  $('confirm-text').textContent = text;
  d.returnValue = '';
  d.showModal();
  $('confirm-ok').focus();
  return new Promise((resolve) => d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true }));
}

async function act(question, url, body) {
  if (!(await confirmDialog(question))) return;
  notice('working…');
  try {
    const r = await fetch(url, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    });
    const answer = await r.json().catch(() => ({}));
    if (r.ok) notice(answer.message || 'done');
    else notice(answer.error || `failed (${r.status})`, true);
  } catch (e) {
    notice(`the dashboard does not answer: ${e.message}`, true);
  }
}

function serviceAction(action, extra, question) {
  if (!selected) return;
  act(`${question} ${$('d-name').textContent}?`, `/api/services/${selected}/action`, { action, ...extra });
}

$('d-scale').addEventListener('click', () => {
  const n = Number($('d-replicas').value);
  if (!Number.isInteger(n) || n < 0) { notice('replicas must be a whole number, 0 or more', true); return; }
  serviceAction('scale', { replicas: n }, `Scale to ${n}:`);
});
$('d-set-image').addEventListener('click', () => {
  const image = $('d-image').value.trim();
  serviceAction('image', { image }, `Run ${image} in`);
});
$('d-rollback').addEventListener('click', () => serviceAction('rollback', {}, 'Roll back'));
$('d-restart').addEventListener('click', () => serviceAction('restart', {}, 'Restart every task of'));
$('d-remove').addEventListener('click', () => serviceAction('remove', {}, 'Remove the service'));
$('d-close').addEventListener('click', () => { stopLogs(); selected = null; $('detail').hidden = true; });
$('d-logs').addEventListener('click', () => {
  if (logSource) stopLogs();
  else if (selected) followLogs(`/api/services/${selected}/logs`, 'of the service');
});
$('columns').addEventListener('click', (e) => {
  const li = e.target.closest('.task');
  if (!li || !model) return;
  const s = model.services.find((x) => x.name === li.dataset.service);
  if (s) select(s.id);
});

// ---- the timeline ---------------------------------------------------------

function addEvent(ev) {
  const list = $('timeline');
  const when = new Date(ev.time * 1000);
  list.prepend(el('li', { 'data-kind': ev.kind },
    el('time', { datetime: when.toISOString(), text: when.toLocaleTimeString() }),
    `${ev.kind} ${ev.action} ${ev.name || ev.id.slice(0, 12)}${ev.detail ? ` (${ev.detail})` : ''}`));
  while (list.children.length > 200) list.lastChild.remove();
}

connect();
