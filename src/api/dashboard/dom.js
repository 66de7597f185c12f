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
 * means a handler is being asked for its jobs right now, the only state
 * that moves; `idle` is the word shown instead of the numbers when there
 * are none and nothing is being asked for (`paused`, `waiting`, `failed`…),
 * without it a bar with no jobs reads `no jobs`, complete. `open` means more
 * jobs may come, so a full bar is not drawn as complete. `tone` colours it
 * by how things went (see `flowTone`); only an untoned bar turns green.
 */
export function bar({ done = 0, total = 0, failed = 0, label, pending = false, idle = '', open = false, tone = '', testid }) {
  const empty = total === 0;
  const counted = !empty ? (100 * done) / total : pending || idle ? 0 : 100;
  const percent = Math.round(counted);
  const fill = h('span', { class: 'bar-fill' });
  fill.style.width = `${counted}%`;
  const broken = h('span', { class: 'bar-failed' });
  broken.style.width = `${empty ? 0 : (100 * failed) / total}%`;
  const text = !empty ? `${done}/${total}` : pending ? 'enumerating…' : idle || 'no jobs';
  const classes = ['bar'];
  if (pending && empty) classes.push('pending');
  if (tone) classes.push(`tone-${tone}`);
  if (percent === 100 && !open) classes.push('complete');
  return h(
    'span',
    {
      class: classes.join(' '),
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

/**
 * A flow's outcome from its status, as the server's `rules::outcome` works
 * it out: flow events carry the status alone, so a page that follows them
 * must tell a finish through an error transition from a success itself.
 */
export function outcomeOf(status, tookErrorTransition) {
  if (status === 'finished') return tookErrorTransition ? 'failed' : 'succeeded';
  return status;
}

/** A flow that took an error transition and is not over yet. */
export function onErrorPath(flow) {
  return Boolean(flow.took_error_transition) && (flow.status === 'running' || flow.status === 'paused');
}

/**
 * The tone of the bars that stand for a whole flow: its outcome, not its
 * status, so that a flow that finished in its error phase is not green,
 * and a running one on its error path is not the colour of steady work.
 */
export function flowTone(flow) {
  const outcome = flow.outcome ?? outcomeOf(flow.status, flow.took_error_transition);
  if (outcome === 'failed' || outcome === 'canceled' || outcome === 'paused') return outcome;
  if (outcome === 'running' && flow.took_error_transition) return 'error-path';
  return '';
}

/**
 * What a `waiting` note says, read from its words: `worker` (no live
 * worker offers the handler), `slot` (every slot of the handler's
 * concurrency limit, shared by all workers, is taken), `rate` (its rate
 * limit has no token left for now), or `other`; with the handler's name
 * and the limit's figures when the note has them.
 */
export function readWaiting(note) {
  const text = String(note);
  let match = /^waiting for a worker: (\S+)(?: (.+))?$/.exec(text);
  if (match) return { kind: 'worker', handler: match[1], detail: match[2] ?? '' };
  match = /^waiting for a slot: (\S+) (\d+)\/(\d+)$/.exec(text);
  if (match) return { kind: 'slot', handler: match[1], held: Number(match[2]), limit: Number(match[3]) };
  match = /^waiting for a rate token: (\S+) (.+)$/.exec(text);
  if (match) return { kind: 'rate', handler: match[1], rate: match[2] };
  return { kind: 'other', handler: null };
}

/** The handlers the server says cannot start a call right now: no worker
 * offers them, or their concurrency or rate limit holds them back. */
export function waitingHandlers(waiting) {
  const names = new Set();
  for (const note of waiting ?? []) {
    const { handler } = readWaiting(note);
    if (handler) names.add(handler);
  }
  return names;
}

/** Why the flow waits, in words a tooltip can add to the note. */
function waitingHelp(reading) {
  switch (reading.kind) {
    case 'worker':
      return `No live worker offers ${reading.handler}${reading.detail ? ` ${reading.detail}` : ''}; the flow goes on when one does.`;
    case 'slot':
      return `All ${reading.limit} slots of ${reading.handler}'s concurrency limit are taken, across every worker; the flow goes on when one is free.`;
    case 'rate':
      return `${reading.handler}'s rate limit (${reading.rate}) is spent for now; the flow goes on when it allows another call.`;
    default:
      return 'Why the flow cannot go on right now.';
  }
}

/**
 * A flow's `waiting` notes as badges, one per note, coloured by kind
 * (`waiting-worker`, `waiting-slot`, `waiting-rate`): the text is the
 * server's note as it is, the tooltip says what it means.
 */
export function waitingBadges(notes, testid) {
  return (notes ?? []).map((note) => {
    const reading = readWaiting(note);
    return h(
      'span',
      { class: `waiting-note waiting-${reading.kind}`, title: waitingHelp(reading), dataset: { kind: reading.kind }, testid },
      String(note),
    );
  });
}

/**
 * What a bar over `handlers` of one visit shows while they have no jobs:
 * `{pending}` when one of them is being asked for its jobs right now, else
 * `{idle}`, the word that says why there is nothing (empty for "no jobs").
 * Only a running flow in a running visit enumerates, and a handler no
 * worker offers waits rather than enumerates.
 */
export function quietState(flow, visit, handlers = visit.handlers) {
  if (visit.state === 'failed') return { pending: false, idle: 'failed' };
  if (visit.state === 'completed') return { pending: false, idle: '' };
  if (flow.status === 'paused') return { pending: false, idle: 'paused' };
  if (flow.status !== 'running') return { pending: false, idle: flow.status === 'canceled' ? 'canceled' : 'stopped' };
  const unasked = handlers.filter((handler) => !handler.enumerated);
  if (unasked.length === 0) return { pending: false, idle: '' };
  const waiting = waitingHandlers(flow.waiting);
  if (unasked.some((handler) => !waiting.has(handler.handler))) return { pending: true, idle: '' };
  return { pending: false, idle: 'waiting' };
}

/**
 * A flow's status as a coloured word. The colour is the outcome's; the
 * word stays the status (what filters and the CLI use), with what the
 * status alone hides said beside it.
 */
export function statusBadge(flow, testid) {
  const outcome = flow.outcome ?? outcomeOf(flow.status, flow.took_error_transition);
  const errorPath = onErrorPath(flow);
  let text = flow.status;
  let title = '';
  if (errorPath) {
    text = `${flow.status} on error path`;
    title = 'The flow took an error transition and runs its error phases';
  } else if (flow.status === 'finished' && outcome === 'failed') {
    text = 'finished after error';
    title = 'The flow finished in a phase it reached through an error transition';
  }
  return h(
    'span',
    {
      class: `status status-${outcome}${errorPath ? ' error-path' : ''}`,
      title: title || undefined,
      dataset: { status: flow.status, outcome },
      testid,
    },
    text,
  );
}
