// Small helpers to build the page's elements without a framework.

const SVG_NS = 'http://www.w3.org/2000/svg';

function assign(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.setAttribute('class', value);
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2), value);
    } else if (key === 'testid') node.setAttribute('data-testid', value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: `h('a', {href: '#/'}, 'Flows')`. */
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  assign(node, attrs);
  append(node, children);
  return node;
}

/** An SVG element, with the same calling convention as `h`. */
export function s(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  assign(node, attrs);
  append(node, children);
  return node;
}

/** Replaces the children of `node`, keeping the focus on the element with
 * the same `data-focus-key` if the focus was inside. */
export function replace(node, ...children) {
  const active = document.activeElement;
  const key = node.contains(active) ? active?.dataset?.focusKey : undefined;
  node.replaceChildren();
  append(node, children);
  if (key) node.querySelector(`[data-focus-key="${CSS.escape(key)}"]`)?.focus();
}

/**
 * A progress bar: `done` of `total`, `failed` drawn apart. `label` names
 * it for assistive technology; the text inside shows the numbers. `pending`
 * means the total is not known yet; `open` that more jobs may come, so a
 * full bar is not drawn as complete.
 */
export function bar({ done = 0, total = 0, failed = 0, label, pending = false, open = false, testid }) {
  const percent = total > 0 ? Math.round((100 * done) / total) : pending ? 0 : 100;
  const fill = h('span', { class: 'bar-fill' });
  fill.style.width = `${total > 0 ? (100 * done) / total : pending ? 0 : 100}%`;
  const broken = h('span', { class: 'bar-failed' });
  broken.style.width = `${total > 0 ? (100 * failed) / total : 0}%`;
  const text = pending ? 'enumerating…' : total > 0 ? `${done}/${total}` : 'no jobs';
  return h(
    'span',
    {
      class: `bar${pending ? ' pending' : ''}${percent === 100 && !open ? ' complete' : ''}`,
      role: 'progressbar',
      'aria-valuemin': 0,
      'aria-valuemax': 100,
      'aria-valuenow': percent,
      'aria-valuetext': `${text} (${percent}%)`,
      'aria-label': label,
      title: `${label}: ${text}${failed ? `, ${failed} failed` : ''}`,
      testid,
    },
    fill,
    broken,
    h('span', { class: 'bar-text' }, text),
  );
}

/** A flow status as a coloured word. */
export function statusBadge(status, testid) {
  return h('span', { class: `status status-${status}`, testid }, status);
}
