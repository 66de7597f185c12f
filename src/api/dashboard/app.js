// The dashboard's entry point: the router over the URL's hash, the token
// form, and the header.
//
// Views are modules with `mount(main, params)`, which returns an object
// with `unmount()` and, when a view can follow a change of its own
// parameters without starting over, `update(params)`.

import { forgetToken, setTokenAsker, storedToken } from './client.js';
import * as list from './list.js';
import * as detail from './detail.js';
import * as start from './start.js';
import * as workers from './workers.js';

const routes = [
  // A flow's page belongs to the flows in the navigation.
  { pattern: /^\/flows\/([^/]+)$/, view: detail, name: 'list', params: (m) => ({ id: decodeURIComponent(m[1]) }) },
  { pattern: /^\/start$/, view: start, name: 'start', params: () => ({}) },
  { pattern: /^\/workers$/, view: workers, name: 'workers', params: () => ({}) },
  { pattern: /^\/?$/, view: list, name: 'list', params: () => ({}) },
];

const main = document.getElementById('main');
let current = null; // { view, mounted }

/** `#/flows/ID?x=1` as its path and query. */
function hashParts() {
  const hash = window.location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = hash.split('?');
  return { path, query: new URLSearchParams(query) };
}

function route() {
  const { path, query } = hashParts();
  for (const candidate of routes) {
    const match = candidate.pattern.exec(path);
    if (match) return { ...candidate, params: { ...candidate.params(match), query } };
  }
  return null;
}

function markNavigation(name) {
  for (const link of document.querySelectorAll('nav a[data-view]')) {
    if (link.dataset.view === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function render() {
  const next = route();
  if (!next) {
    window.location.replace('#/');
    return;
  }
  markNavigation(next.name);
  if (current && current.view === next.view && current.mounted.update) {
    current.mounted.update(next.params);
    return;
  }
  const first = current === null;
  current?.mounted.unmount();
  main.replaceChildren();
  current = { view: next.view, mounted: next.view.mount(main, next.params) };
  // Tell assistive technology the page changed; not on the first load,
  // where the browser's own focus handling is what people expect.
  if (!first) main.querySelector('h1')?.focus({ preventScroll: false });
}

// ------------------------------------------------------------ the token

const dialog = document.getElementById('token-dialog');
const form = document.getElementById('token-form');
const input = document.getElementById('token-input');
const forget = document.getElementById('forget-token');
let answer = null;

function showForget() {
  forget.hidden = !storedToken();
}

setTokenAsker((reason) => {
  document.getElementById('token-reason').textContent = reason;
  input.value = '';
  if (!dialog.open) dialog.showModal();
  input.focus();
  return new Promise((resolve) => {
    answer = resolve;
  });
});

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const token = input.value.trim();
  if (!token) {
    input.focus();
    return;
  }
  dialog.close();
  const resolve = answer;
  answer = null;
  resolve?.(token);
  showForget();
});

// Without a token nothing works, so Escape does not dismiss the question.
dialog.addEventListener('cancel', (event) => event.preventDefault());

forget.addEventListener('click', () => {
  forgetToken();
  window.location.reload();
});

// The hash holds the route, so the skip link moves the focus itself.
document.querySelector('.skip').addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener('hashchange', render);
showForget();
render();
