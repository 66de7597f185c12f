// The workflow graph as inline SVG: phases as boxes in columns by their
// distance from the initial phase, `transitions_to` as solid arrows and
// `on_error_transition_to` as dashed red ones, the current phase
// highlighted and final phases drawn with a double border.

import { s } from './dom.js';

const WIDTH = 152;
const HEIGHT = 50;
const COLUMN_GAP = 74;
const ROW_GAP = 26;
const PAD = 16;
const ENTRY = 34; // room on the left for the initial phase's entry arrow
const ARC = 46; // room above for arrows that go back

function handlerNames(phase) {
  return (phase.handlers ?? []).map((handler) => (typeof handler === 'string' ? handler : handler.name));
}

/**
 * A phase's ways out: `[{target, kind, when}]`, where `transitions_to` may
 * be one phase or a list of branches (`when` is the branch's condition, as
 * JSON, or `else` for the default one).
 */
export function exits(phase) {
  const next = phase.transitions_to;
  const ways = Array.isArray(next)
    ? next.map((branch) => ({
        target: branch?.to,
        kind: 'next',
        when: branch?.when === undefined ? 'else' : JSON.stringify(branch.when),
      }))
    : [{ target: next, kind: 'next', when: null }];
  ways.push({ target: phase.on_error_transition_to, kind: 'error', when: null });
  return ways.filter((way) => typeof way.target === 'string');
}

function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * Where each phase goes: `{nodes: Map(name → {x, y, column, row}), width,
 * height}`. Phases are laid out left to right by their distance from the
 * initial phase over both kinds of transition; within a column, phases
 * reached by a normal transition come before those reached only on error.
 */
export function layout(definition) {
  const phases = definition?.phases ?? {};
  const names = Object.keys(phases);
  const initial = names.find((name) => phases[name].is_initial) ?? names[0];
  const depth = new Map();
  const normal = new Set(initial === undefined ? [] : [initial]);
  if (initial !== undefined) depth.set(initial, 0);
  const queue = initial === undefined ? [] : [initial];
  while (queue.length > 0) {
    const name = queue.shift();
    const phase = phases[name];
    for (const { target, kind } of exits(phase)) {
      if (!(target in phases)) continue;
      if (kind === 'next') normal.add(target);
      if (!depth.has(target)) {
        depth.set(target, depth.get(name) + 1);
        queue.push(target);
      }
    }
  }
  const deepest = Math.max(-1, ...depth.values());
  for (const name of names) if (!depth.has(name)) depth.set(name, deepest + 1);

  const columns = [];
  for (const name of names) {
    const column = depth.get(name);
    (columns[column] ??= []).push(name);
  }
  for (const column of columns) {
    column?.sort((a, b) => Number(!normal.has(a)) - Number(!normal.has(b)) || names.indexOf(a) - names.indexOf(b));
  }
  const tallest = Math.max(1, ...columns.map((column) => column?.length ?? 0));
  const backwards = names.some((name) => {
    const phase = phases[name];
    return exits(phase).some(
      ({ target }) => target in phases && depth.get(target) <= depth.get(name),
    );
  });
  const top = PAD + (backwards ? ARC : 0);
  const nodes = new Map();
  columns.forEach((column, index) => {
    if (!column) return;
    const offset = ((tallest - column.length) * (HEIGHT + ROW_GAP)) / 2;
    column.forEach((name, row) => {
      nodes.set(name, {
        x: PAD + ENTRY + index * (WIDTH + COLUMN_GAP),
        y: top + offset + row * (HEIGHT + ROW_GAP),
        column: index,
        row,
      });
    });
  });
  return {
    nodes,
    initial,
    width: PAD * 2 + ENTRY + columns.length * WIDTH + Math.max(0, columns.length - 1) * COLUMN_GAP + 40,
    height: top + tallest * HEIGHT + (tallest - 1) * ROW_GAP + PAD,
  };
}

/** The path of an arrow from one box to another. */
function edgePath(from, to) {
  const fromMid = from.y + HEIGHT / 2;
  const toMid = to.y + HEIGHT / 2;
  if (to.column > from.column) {
    const x1 = from.x + WIDTH;
    const x2 = to.x - 2;
    const bend = Math.min(COLUMN_GAP, (x2 - x1) / 2);
    return `M${x1},${fromMid} C${x1 + bend},${fromMid} ${x2 - bend},${toMid} ${x2},${toMid}`;
  }
  if (to === from) {
    // A phase that loops back to itself: a loop over its box.
    const x = from.x + WIDTH / 2;
    const over = from.y - ARC + 10;
    return `M${x - 18},${from.y} C${x - 30},${over} ${x + 30},${over} ${x + 18},${from.y - 2}`;
  }
  if (to.column === from.column) {
    // Same column: bulge out on the right.
    const x = from.x + WIDTH;
    const reach = x + COLUMN_GAP * 0.6;
    return `M${x},${fromMid} C${reach},${fromMid} ${reach},${toMid} ${x + 2},${toMid}`;
  }
  // Backwards: arc over the boxes, top to top.
  const x1 = from.x + WIDTH / 2;
  const x2 = to.x + WIDTH / 2;
  const over = Math.min(from.y, to.y) - ARC + 6;
  return `M${x1},${from.y} C${x1},${over} ${x2},${over} ${x2},${to.y - 2}`;
}

/**
 * Draws `definition`. `state` says what the flow did: `current` (its
 * phase), `visited` and `failed` (sets of phase names), `outcome`, which
 * colours the current phase (a finish in an error phase is not a success),
 * and `errorPath`, true while the flow runs after an error transition.
 */
export function drawGraph(definition, state = {}) {
  const { current, visited = new Set(), failed = new Set(), outcome, errorPath = false } = state;
  const phases = definition?.phases ?? {};
  const { nodes, initial, width, height } = layout(definition);
  const svg = s('svg', {
    class: `graph${outcome ? ` graph-${outcome}` : ''}${errorPath ? ' graph-error-path' : ''}`,
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: 'img',
    'aria-labelledby': 'graph-title',
    testid: 'workflow-graph',
  });
  const edgesDescribed = [];
  svg.append(
    s('title', { id: 'graph-title' }, `Workflow ${definition?.workflow ?? ''}: ${Object.keys(phases).length} phases`),
    s(
      'defs',
      {},
      s(
        'marker',
        { id: 'arrow-next', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto' },
        s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }),
      ),
      s(
        'marker',
        { id: 'arrow-error', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto' },
        s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead error' }),
      ),
    ),
  );

  const edges = s('g', { class: 'edges' });
  for (const [name, phase] of Object.entries(phases)) {
    const from = nodes.get(name);
    for (const { target, kind, when } of exits(phase)) {
      const to = nodes.get(target);
      if (!to) continue;
      const condition = when ? ` when ${when}` : '';
      edgesDescribed.push(`${name} ${kind === 'error' ? 'on error to' : 'to'} ${target}${condition}`);
      edges.append(
        s(
          'path',
          {
            d: edgePath(from, to),
            class: `edge edge-${kind}`,
            'marker-end': `url(#arrow-${kind})`,
            dataset: { from: name, to: target },
            testid: kind === 'error' ? 'graph-error-edge' : 'graph-edge',
          },
          s('title', {}, `${name} → ${target}${kind === 'error' ? ' (on error)' : ''}${condition}`),
        ),
      );
    }
  }
  svg.append(edges);

  const start = initial !== undefined && nodes.get(initial);
  if (start) {
    const y = start.y + HEIGHT / 2;
    svg.append(
      s('circle', { class: 'entry', cx: start.x - ENTRY + 6, cy: y, r: 5 }),
      s('path', { class: 'edge edge-next', d: `M${start.x - ENTRY + 11},${y} L${start.x - 2},${y}`, 'marker-end': 'url(#arrow-next)' }),
    );
  }

  const boxes = s('g', { class: 'phases' });
  for (const [name, phase] of Object.entries(phases)) {
    const at = nodes.get(name);
    const handlers = handlerNames(phase);
    const classes = ['phase'];
    if (phase.is_final) classes.push('final');
    if (phase.is_initial) classes.push('initial');
    if (visited.has(name)) classes.push('visited');
    if (failed.has(name)) classes.push('failed');
    if (name === current) classes.push('current');
    const kinds = [phase.is_initial && 'initial', phase.is_final && 'final', name === current && 'current'].filter(Boolean);
    const group = s(
      'g',
      {
        class: classes.join(' '),
        transform: `translate(${at.x},${at.y})`,
        testid: 'graph-node',
        dataset: { phase: name, current: String(name === current), final: String(Boolean(phase.is_final)) },
      },
      s(
        'title',
        {},
        `${name}${kinds.length ? ` (${kinds.join(', ')})` : ''}\n` +
          (handlers.length ? `handlers: ${handlers.join(', ')}` : 'no handlers') +
          (phase.timeout ? `\ntimeout: ${phase.timeout}` : ''),
      ),
      s('rect', { class: 'box', width: WIDTH, height: HEIGHT, rx: 8 }),
      phase.is_final && s('rect', { class: 'inner', x: 4, y: 4, width: WIDTH - 8, height: HEIGHT - 8, rx: 5 }),
      s('text', { class: 'name', x: WIDTH / 2, y: 21, 'text-anchor': 'middle' }, clip(name, 19)),
      s(
        'text',
        { class: 'handlers', x: WIDTH / 2, y: 38, 'text-anchor': 'middle' },
        clip(handlers.length ? handlers.join(', ') : phase.is_final ? 'final' : 'no handlers', 24),
      ),
    );
    boxes.append(group);
  }
  svg.append(boxes);
  svg.append(s('desc', {}, edgesDescribed.join('; ')));
  return svg;
}

/** The key under the graph. */
export function legend() {
  const item = (cls, label) => {
    const sample = s('svg', { width: 30, height: 12, 'aria-hidden': 'true' });
    if (cls.startsWith('edge')) {
      sample.append(s('path', { d: 'M2,6 L28,6', class: `edge ${cls}` }));
    } else {
      sample.append(s('rect', { x: 2, y: 1, width: 26, height: 10, rx: 3, class: `box ${cls}` }));
    }
    const entry = document.createElement('li');
    entry.append(sample, ` ${label}`);
    return entry;
  };
  const list = document.createElement('ul');
  list.className = 'legend';
  list.setAttribute('aria-label', 'Legend');
  list.append(
    item('edge-next', 'next phase'),
    item('edge-error', 'on error'),
    item('legend-current', 'current phase'),
    item('legend-visited', 'visited'),
    item('legend-final', 'final phase'),
  );
  return list;
}
