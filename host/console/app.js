// The console: one page per section (Tools, Chat, Tasks, Plugins, Metrics), chosen by the
// URL's fragment. Each refreshes from the API while it is shown, so a plugin copied into
// the directory appears without reloading the page.

import { el, events, forgetKey, hasKey, json, onKeyNeeded, pretty, request } from './api.js';
import { argumentsForm } from './form.js';
import * as metrics from './metrics.js';

const $ = (selector) => document.querySelector(selector);
const REFRESH_MS = 2000;

// ---- The API key ----

onKeyNeeded(
  (reason) =>
    new Promise((resolve) => {
      const dialog = $('#key-dialog');
      $('#key-reason').textContent = reason;
      $('#key-input').value = '';
      const done = (key) => {
        dialog.close();
        $('#key-form').onsubmit = null;
        $('#key-cancel').onclick = null;
        showKeyState();
        resolve(key);
      };
      $('#key-form').onsubmit = (event) => {
        event.preventDefault();
        done($('#key-input').value.trim());
      };
      $('#key-cancel').onclick = () => done(null);
      dialog.showModal();
      $('#key-input').focus();
    }),
);

function showKeyState() {
  $('#forget-key').hidden = !hasKey();
}

$('#forget-key').addEventListener('click', () => {
  forgetKey();
  showKeyState();
});

// ---- Tools ----

const toolCards = new Map();
let generation = null;

function access(capabilities) {
  const parts = [];
  for (const [side, value] of Object.entries(capabilities ?? {})) {
    const items = [
      ...(value?.directories ?? []).map((d) => `${d.path} (${d.access})`),
      ...(value?.outbound_hosts ?? []),
      ...(value?.env ?? []).map((e) => `$${e}`),
    ];
    parts.push(el('li', {}, el('strong', {}, side === 'needs' ? 'Needs: ' : 'Granted: '), items.length ? items.join(', ') : 'nothing'));
  }
  return el('ul', { class: 'access' }, parts);
}

function hints(annotations) {
  const shown = Object.entries(annotations ?? {})
    .filter(([key, value]) => value === true && key.endsWith('Hint'))
    .map(([key]) => key.replace(/Hint$/, '').replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`));
  return shown.length ? el('p', { class: 'badges' }, shown.map((h) => el('span', { class: 'badge' }, h))) : null;
}

function outcomeOf(reply, started, fields) {
  const trace = reply.headers.get('traceparent')?.split('-')[1];
  const ms = (performance.now() - started).toFixed(1);
  if (reply.ok) {
    const usage = reply.value.usage ?? {};
    return [
      el('pre', { class: 'result' }, pretty(reply.value.result)),
      el('dl', { class: 'usage' },
        el('dt', {}, 'fuel'), el('dd', {}, String(usage.fuel ?? '')),
        el('dt', {}, 'peak memory'), el('dd', {}, `${((usage.memory_bytes ?? 0) / 1024).toFixed(0)} KiB`),
        el('dt', {}, 'latency'), el('dd', {}, `${((usage.elapsed_us ?? 0) / 1000).toFixed(2)} ms in the host, ${ms} ms here`),
        el('dt', {}, 'trace'), el('dd', {}, el('code', {}, trace ?? ''))),
    ];
  }
  const error = reply.value.error ?? { kind: `http_${reply.status}`, message: 'no error body' };
  // The message names the argument the server refused: point at its field.
  const words = new Set(error.message.match(/[\w-]+/g) ?? []);
  for (const input of fields.querySelectorAll('input[data-path], select[data-path], textarea[data-path]')) {
    const path = input.dataset.path;
    const named = error.kind === 'invalid_arguments' && path && (error.message.includes(path) || words.has(path.split('/').pop()));
    input.toggleAttribute('aria-invalid', Boolean(named));
  }
  return [
    el('p', { class: 'error', role: 'alert' }, el('code', { class: 'kind' }, error.kind), ' ', error.message),
    trace ? el('p', { class: 'muted' }, 'trace ', el('code', {}, trace)) : null,
  ];
}

function toolCard(tool) {
  const form = argumentsForm(tool.function.parameters);
  const outcome = el('div', { class: 'outcome', 'aria-live': 'polite' });
  const fields = el('div', {}, form.element);
  const submit = el('button', { type: 'submit' }, 'Call');
  const tryIt = el('form', { class: 'try', novalidate: true }, fields, submit);
  tryIt.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    const started = performance.now();
    const reply = await json('POST', `/v1/tools/${encodeURIComponent(tool.id)}/call`, form.read());
    outcome.replaceChildren(...outcomeOf(reply, started, fields));
    submit.disabled = false;
  });
  return el('article', { class: 'card', 'data-tool': tool.id },
    el('h3', {}, tool.id),
    el('p', {}, tool.function.description),
    hints(tool.annotations),
    access(tool.capabilities),
    el('details', {}, el('summary', {}, 'Schemas'),
      el('h4', {}, 'Input'), el('pre', {}, pretty(tool.function.parameters)),
      tool.output_schema ? [el('h4', {}, 'Output'), el('pre', {}, pretty(tool.output_schema))] : null),
    tryIt, outcome);
}

async function refreshTools(force) {
  const plugins = await json('GET', '/v1/plugins');
  if (!plugins.ok) return;
  renderPlugins(plugins.value);
  if (!force && plugins.value.generation === generation) return;
  const tools = await json('GET', '/v1/tools');
  if (!tools.ok) return;
  generation = plugins.value.generation;
  const list = $('#tool-list');
  const seen = new Set();
  for (const tool of tools.value.data) {
    seen.add(tool.id);
    // A card being filled in stays as it is; a plugin reload brings new schemas.
    const key = JSON.stringify(tool);
    if (toolCards.get(tool.id)?.key !== key) {
      const card = toolCard(tool);
      const old = toolCards.get(tool.id)?.card;
      if (old) old.replaceWith(card);
      else list.append(card);
      toolCards.set(tool.id, { key, card });
    }
  }
  for (const [id, { card }] of toolCards) {
    if (!seen.has(id)) {
      card.remove();
      toolCards.delete(id);
    }
  }
  $('#tool-count').textContent = `${toolCards.size} tools`;
  filterTools();
}

function filterTools() {
  const words = $('#tool-filter').value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const { card } of toolCards.values()) card.hidden = !words.every((w) => card.textContent.toLowerCase().includes(w));
}
$('#tool-filter').addEventListener('input', filterTools);

// ---- Plugins ----

function renderPlugins(value) {
  $('#plugin-list').replaceChildren(
    ...value.data.map((p) =>
      el('article', { class: 'card', 'data-plugin': p.name },
        el('h3', {}, p.name),
        el('p', { class: 'muted' }, `${p.file}, ${(p.bytes / 1024).toFixed(0)} KiB, ${p.contract}`),
        el('p', {}, 'Tools: ', p.tools.join(', ')),
        p.refused.length ? el('p', { class: 'muted' }, 'Not offered: ', p.refused.join('; ')) : null,
        el('details', {}, el('summary', {}, 'Imports'), el('ul', {}, p.imports.map((i) => el('li', {}, i)))))),
  );
  $('#plugin-failed').replaceChildren(
    ...value.failed.map((f) =>
      el('article', { class: 'card failed', 'data-failed': f.name },
        el('h3', {}, `${f.name} did not load`),
        el('p', {}, el('code', { class: 'kind' }, f.kind), ' ', f.reason),
        el('p', { class: 'muted' }, f.serving_previous ? 'The previous version keeps serving.' : `${f.file} is not serving.`))),
  );
  $('#plugin-state').textContent = value.loading ? 'Loading the plugins found at start-up…' : '';
}

// ---- Chat ----

const conversation = [];
let model = null;

function modelStep(step) {
  const parts = [
    el('span', { class: 'step-kind' }, 'model'),
    ` ${step.produced.replace('_', ' ')} · ${step.prompt_tokens} prompt tokens → ${step.completion_tokens} tokens · ${step.latency_ms.toFixed(0)} ms`,
  ];
  const prompt = step.prompt ? el('details', { class: 'prompt' }, el('summary', {}, 'Prompt as the model saw it'), el('pre', {}, step.prompt)) : null;
  return el('li', { class: 'step model' }, el('p', {}, parts), prompt);
}

function toolStep(step) {
  const ok = step.result !== undefined;
  return el('li', { class: `step tool ${ok ? '' : 'failed'}`, 'data-tool': step.tool },
    el('p', {}, el('span', { class: 'step-kind' }, 'tool'), ' ', el('code', {}, step.tool), ` · ${step.latency_ms.toFixed(1)} ms · fuel ${step.fuel}`),
    el('pre', { class: 'arguments' }, pretty(step.arguments)),
    ok ? el('pre', { class: 'result' }, pretty(step.result)) : el('p', { class: 'error' }, el('code', { class: 'kind' }, step.error.kind), ' ', step.error.message));
}

async function send(text) {
  const log = $('#chat-log');
  log.append(el('li', { class: 'message user' }, text));
  const timeline = el('ol', { class: 'timeline' });
  const answer = el('p', { class: 'answer' });
  const turn = el('li', { class: 'message assistant', 'aria-busy': 'true' }, timeline, answer);
  log.append(turn);
  conversation.push({ role: 'user', content: text });
  model ??= (await json('GET', '/v1/models')).value.data?.[0]?.id ?? 'default';
  const body = { model, messages: conversation, stream: true, autoglm: { show_prompt: $('#show-prompt').checked } };
  const response = await request('POST', '/v1/chat/completions', body);
  if (!response.ok) {
    const error = (await response.json().catch(() => ({}))).error ?? { kind: `http_${response.status}`, message: '' };
    answer.replaceChildren(el('span', { class: 'error' }, el('code', { class: 'kind' }, error.kind), ' ', error.message));
    conversation.pop();
  } else {
    for await (const chunk of events(response)) {
      const step = chunk.autoglm?.step;
      if (step) timeline.append(step.kind === 'tool' ? toolStep(step) : modelStep(step));
      if (chunk.error) answer.append(el('span', { class: 'error' }, chunk.error.message ?? pretty(chunk.error)));
      for (const choice of chunk.choices ?? []) answer.append(choice.delta?.content ?? '');
      turn.scrollIntoView({ block: 'end' });
    }
    conversation.push({ role: 'assistant', content: answer.textContent });
  }
  turn.removeAttribute('aria-busy');
}

$('#chat-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = $('#chat-input');
  const text = input.value.trim();
  if (!text) return;
  input.value = '';
  const button = $('#chat-form button');
  button.disabled = true;
  try {
    await send(text);
  } finally {
    button.disabled = false;
    input.focus();
  }
});
$('#chat-input').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey) {
    event.preventDefault();
    $('#chat-form').requestSubmit();
  }
});

// ---- Tasks ----

let openTask = null;
const time = (ms) => (ms ? new Date(ms).toLocaleTimeString() : '');

async function refreshTasks() {
  const state = $('#task-state').value;
  const reply = await json('GET', `/v1/tasks?limit=50${state ? `&state=${state}` : ''}`);
  if (!reply.ok) {
    $('#task-list').replaceChildren(el('p', { class: 'muted' }, reply.value.error?.message ?? 'no tasks here'));
    return;
  }
  const rows = reply.value.data.map((t) =>
    el('tr', {},
      el('td', {}, el('button', { type: 'button', class: 'link', onclick: () => showTask(t.id) }, t.name ?? t.id)),
      el('td', {}, el('span', { class: `state ${t.state}` }, t.state)),
      el('td', {}, time(t.created_ms)),
      el('td', {}, t.error?.message ?? '')));
  $('#task-list').replaceChildren(
    rows.length
      ? el('table', {}, el('thead', {}, el('tr', {}, ['Task', 'State', 'Submitted', 'Error'].map((h) => el('th', { scope: 'col' }, h)))), el('tbody', {}, rows))
      : el('p', { class: 'muted' }, 'No tasks yet.'),
  );
  if (openTask) await showTask(openTask);
}

async function showTask(id) {
  openTask = id;
  const reply = await json('GET', `/v1/tasks/${encodeURIComponent(id)}`);
  if (!reply.ok) return;
  const task = reply.value;
  const stages = task.stages.map((s) =>
    el('li', { class: `step stage ${s.state}` },
      el('p', {}, el('strong', {}, s.name), ' ', el('span', { class: `state ${s.state}` }, s.state),
        ` · ${s.attempts} attempt${s.attempts === 1 ? '' : 's'}`, s.elapsed_ms !== undefined ? ` · ${s.elapsed_ms} ms` : ''),
      s.result !== undefined ? el('pre', { class: 'result' }, pretty(s.result)) : null,
      s.error ? el('p', { class: 'error' }, el('code', { class: 'kind' }, s.error.kind ?? 'error'), ' ', s.error.message) : null,
      s.compensation ? el('p', { class: 'compensation' }, 'compensation: ', el('span', { class: `state ${s.compensation.state}` }, s.compensation.state),
        s.compensation.error ? ` — ${s.compensation.error.message}` : '') : null));
  $('#task-detail').replaceChildren(
    el('h3', {}, task.name ?? task.id, ' ', el('span', { class: `state ${task.state}` }, task.state)),
    el('p', { class: 'muted' }, `${task.id} · by ${task.caller} · submitted ${time(task.created_ms)}`),
    task.error ? el('p', { class: 'error' }, el('code', { class: 'kind' }, task.error.kind ?? 'error'), ' ', task.error.message) : null,
    el('ol', { class: 'timeline' }, stages));
}
$('#task-state').addEventListener('change', refreshTasks);

// ---- Metrics ----

const history = { calls: [], tokens: [], batch: [] };
let previous = null;

async function refreshMetrics() {
  const response = await request('GET', '/metrics');
  if (!response.ok) return;
  const samples = metrics.parse(await response.text());
  const now = performance.now();
  const calls = metrics.total(samples, 'autoglm_tool_calls_total');
  const tokens = metrics.total(samples, 'autoglm_model_generated_tokens');
  if (previous) {
    const seconds = (now - previous.at) / 1000;
    const push = (series, value) => {
      series.push(Math.max(0, value));
      if (series.length > 60) series.shift();
    };
    push(history.calls, (calls - previous.calls) / seconds);
    push(history.tokens, (tokens - previous.tokens) / seconds);
    push(history.batch, metrics.total(samples, 'autoglm_model_batch_size'));
  }
  previous = { at: now, calls, tokens };
  const hits = metrics.total(samples, 'autoglm_model_prefix_cache_hits');
  const misses = metrics.total(samples, 'autoglm_model_prefix_cache_misses');
  const passes = metrics.total(samples, 'autoglm_model_forward_passes');
  const figures = {
    calls: `${(history.calls.at(-1) ?? 0).toFixed(1)} calls/s`,
    tokens: `${(history.tokens.at(-1) ?? 0).toFixed(1)} tokens/s`,
    batch: `batch ${history.batch.at(-1) ?? 0} now, ${passes ? (metrics.total(samples, 'autoglm_model_sequence_steps') / passes).toFixed(2) : '0'} mean`,
  };
  for (const [name, series] of Object.entries(history)) {
    $(`#chart-${name} .figure`).textContent = figures[name];
    metrics.draw($(`#chart-${name} canvas`), series);
  }
  $('#prefix-cache').textContent = `${hits} prefix-cache hits, ${misses} misses${hits + misses ? ` (${((100 * hits) / (hits + misses)).toFixed(0)}% hit)` : ''}`;
  const p50 = metrics.quantiles(samples, 0.5);
  const p99 = metrics.quantiles(samples, 0.99);
  const counts = new Map();
  for (const s of samples.filter((s) => s.name === 'autoglm_tool_calls_total')) {
    const id = `${s.labels.plugin}.${s.labels.tool}`;
    counts.set(id, (counts.get(id) ?? 0) + s.value);
  }
  const ms = (seconds) => (seconds === undefined ? '' : `${(seconds * 1000).toFixed(seconds < 0.001 ? 3 : 1)} ms`);
  $('#metric-tools tbody').replaceChildren(
    ...[...counts].map(([id, count]) => el('tr', {}, el('td', {}, id), el('td', {}, String(count)), el('td', {}, ms(p50.get(id))), el('td', {}, ms(p99.get(id))))),
  );
  const errors = [...metrics.by(samples, 'autoglm_tool_calls_total', 'outcome')].filter(([kind, n]) => kind !== 'ok' && n > 0);
  $('#metric-errors').replaceChildren(
    ...(errors.length ? errors.map(([kind, n]) => el('li', {}, el('code', { class: 'kind' }, kind), ` ${n}`)) : [el('li', { class: 'muted' }, 'none')]),
  );
}

// ---- Pages ----

const pages = {
  tools: () => refreshTools(false),
  chat: null,
  tasks: refreshTasks,
  plugins: () => refreshTools(false),
  metrics: refreshMetrics,
};
let timer = null;
let round = 0;

function show() {
  const name = location.hash.slice(1) in pages ? location.hash.slice(1) : 'tools';
  for (const section of document.querySelectorAll('main > section')) section.hidden = section.id !== `page-${name}`;
  for (const link of document.querySelectorAll('nav a')) {
    if (link.getAttribute('href') === `#${name}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  clearTimeout(timer);
  const refresh = pages[name];
  const mine = ++round;
  if (!refresh) return;
  const loop = async () => {
    try {
      await refresh();
      $('#status').textContent = '';
    } catch (error) {
      $('#status').textContent = `The server did not answer: ${error.message}`;
    }
    // A page shown since has its own loop; a hidden tab asks less often.
    if (mine === round) timer = setTimeout(loop, document.hidden ? REFRESH_MS * 5 : REFRESH_MS);
  };
  loop();
}

window.addEventListener('hashchange', show);
showKeyState();
show();
document.body.dataset.ready = 'true';
