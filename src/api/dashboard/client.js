// The dashboard's client of the HTTP API: JSON calls and Server-Sent Event
// streams, both carrying the API token when the server wants one.
//
// Browsers' EventSource cannot send an Authorization header, so streams are
// read with fetch and a reader, and their `event:`/`data:` lines parsed here.

const TOKEN_KEY = 'distribot.api-token';

/** An error answer of the API: `{"error": {"code", "message", "path"?}}`. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = body?.error ?? {};
    super(error.message || (status ? `the server answered ${status}` : 'cannot reach the server'));
    this.name = 'ApiError';
    this.status = status;
    this.code = error.code ?? (status ? 'http' : 'network');
    this.path = error.path ?? null;
    this.faults = error.faults ?? [];
  }
}

let memoryToken = null; // the token, where sessionStorage is refused
let askForToken = async () => {
  throw new Error('no way to ask for the API token');
};
let asking = null;

/** Sets how the token is asked for: `ask(reason)` resolves to a token. */
export function setTokenAsker(ask) {
  askForToken = ask;
}

export function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function forgetToken() {
  memoryToken = null;
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage refused (a private window's policy): nothing was kept.
  }
}

function keepToken(token) {
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    // Without storage the token lives as long as this page.
  }
  memoryToken = token;
}

function currentToken() {
  return storedToken() ?? memoryToken;
}

/**
 * After a 401: asks for a token, once however many calls were refused at
 * the same time, and resolves when there is a new one to try.
 */
async function obtainToken(response, offered) {
  await response.body?.cancel().catch(() => {});
  if (currentToken() !== offered) return; // another call already got a new one
  if (!asking) {
    const reason = offered
      ? 'The server did not accept that token. Enter the API token again.'
      : 'This server requires an API token.';
    asking = askForToken(reason)
      .then(keepToken)
      .finally(() => {
        asking = null;
      });
  }
  await asking;
}

function headersWith(extra) {
  const token = currentToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

async function send(path, init) {
  try {
    return await fetch(path, init);
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, null);
  }
}

/** Calls the API and answers its JSON; throws an `ApiError` otherwise. */
export async function call(path, { method = 'GET', body, signal } = {}) {
  for (;;) {
    const offered = currentToken();
    const init = { method, signal, cache: 'no-store', headers: headersWith({ Accept: 'application/json' }) };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
    const response = await send(path, init);
    if (response.status === 401) {
      await obtainToken(response, offered);
      continue;
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }
}

/** Splits a text stream into Server-Sent Events and hands each one over. */
class EventParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = '';
    this.name = '';
    this.data = [];
  }

  push(chunk) {
    this.buffer += chunk;
    for (;;) {
      const end = this.buffer.search(/\r\n|\r|\n/);
      // A lone `\r` at the end may be the first half of `\r\n`.
      if (end < 0 || (end === this.buffer.length - 1 && this.buffer.endsWith('\r'))) return;
      const line = this.buffer.slice(0, end);
      const width = this.buffer.startsWith('\r\n', end) ? 2 : 1;
      this.buffer = this.buffer.slice(end + width);
      this.line(line);
    }
  }

  line(line) {
    if (line === '') {
      if (this.data.length > 0) {
        const text = this.data.join('\n');
        let payload;
        try {
          payload = JSON.parse(text);
        } catch {
          payload = text;
        }
        this.onEvent(this.name || 'message', payload);
      }
      this.name = '';
      this.data = [];
      return;
    }
    if (line.startsWith(':')) return; // a keep-alive comment
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.name = value;
    else if (field === 'data') this.data.push(value);
  }
}

/**
 * Reads one event stream until the server closes it. `onOpen` runs once
 * the server accepted the request.
 */
export async function readEvents(path, { onEvent, onOpen, signal }) {
  for (;;) {
    const offered = currentToken();
    const response = await send(path, {
      signal,
      cache: 'no-store',
      headers: headersWith({ Accept: 'text/event-stream' }),
    });
    if (response.status === 401) {
      await obtainToken(response, offered);
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    onOpen?.();
    const parser = new EventParser(onEvent);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      parser.push(value);
    }
  }
}

/**
 * Follows an event stream, opening it again (with a growing pause) when it
 * breaks, until `stop()` is called or `finished()` says the stream has told
 * everything. `onState` hears `live`, `reconnecting` and `closed`.
 */
export function follow(path, { onEvent, onState = () => {}, finished = () => false, onFatal }) {
  const controller = new AbortController();
  let pause = 500;
  (async () => {
    while (!controller.signal.aborted) {
      try {
        await readEvents(path, {
          onEvent,
          signal: controller.signal,
          onOpen: () => {
            pause = 500;
            onState('live');
          },
        });
        if (finished()) break;
      } catch (error) {
        if (controller.signal.aborted) break;
        if (error instanceof ApiError && error.status >= 400 && error.status < 500) {
          onFatal?.(error);
          break;
        }
      }
      if (controller.signal.aborted || finished()) break;
      onState('reconnecting');
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 10_000);
    }
    onState('closed');
  })();
  return () => controller.abort();
}

/** `/api/flows?…` with the empty parameters left out. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') query.set(key, value);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

export function segment(value) {
  return encodeURIComponent(value);
}
