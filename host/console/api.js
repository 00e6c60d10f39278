// Every request the console makes, with the API key the person gave (kept in this tab's
// sessionStorage only). A 401 asks for a key once for all requests waiting on it, checks it
// with one request, and only then lets them retry: a wrong key costs one failed login.

const STORAGE = 'autoglm.key';
let asking = null;
let ask = async () => false;

/** `prompt(reason)` resolves to a key to try, or null when the person gives up. */
export function onKeyNeeded(prompt) {
  ask = prompt;
}

export function hasKey() {
  return sessionStorage.getItem(STORAGE) !== null;
}

export function forgetKey() {
  sessionStorage.removeItem(STORAGE);
}

function headers(extra) {
  const key = sessionStorage.getItem(STORAGE);
  return key === null ? extra : { ...extra, authorization: `Bearer ${key}` };
}

async function send(method, path, body, extra = {}) {
  const init = { method, headers: headers(extra) };
  if (body !== undefined) {
    init.headers = { ...init.headers, 'content-type': 'application/json' };
    init.body = JSON.stringify(body);
  }
  return fetch(path, init);
}

async function newKey() {
  let reason = hasKey() ? 'The server refused that key.' : 'This server needs an API key.';
  for (;;) {
    const key = await ask(reason);
    if (key === null) return false;
    sessionStorage.setItem(STORAGE, key);
    const check = await send('GET', '/v1/tools');
    if (check.status !== 401) return true;
    reason = 'The server refused that key.';
  }
}

/** `fetch` with the key; a 401 asks for one and tries again once it is accepted. */
export async function request(method, path, body, extra) {
  for (;;) {
    const response = await send(method, path, body, extra);
    if (response.status !== 401) return response;
    asking ??= newKey().finally(() => {
      asking = null;
    });
    if (!(await asking)) return response;
  }
}

/** A JSON request: `{ status, ok, value, headers }`; the body is `{}` when it is not JSON. */
export async function json(method, path, body) {
  const response = await request(method, path, body);
  const value = await response.json().catch(() => ({}));
  return { status: response.status, ok: response.ok, value, headers: response.headers };
}

/** The `data:` payloads of a Server-Sent Events response, parsed as JSON, as they arrive. */
export async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
      if (data && data !== '[DONE]') yield JSON.parse(data);
    }
  }
}

/** An element: `el('p', { class: 'x' }, 'text', child)`; strings become text, never HTML. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** JSON as people read it. */
export function pretty(value) {
  return JSON.stringify(value, null, 2);
}
