// The flow list, the default view: one page of flows from the server,
// newest first, filtered by status and workflow, kept live by
// `/api/events`.
//
// It never holds more than one page, so ten thousand flows cost what fifty
// do. Events only say that something changed; the page is then loaded
// again, at most a few times a second. Job counts move without events, so
// while a flow on the page runs the page is also loaded every second.

import { call, follow, withQuery } from './client.js';
import { bar, flowTone, h, quietState, replace, statusBadge, waitingBadges } from './dom.js';
import { ago, count, duration, between, full, shortId } from './format.js';

const PAGE = 50; // flows a page shows, unless the hash says `limit=`
const STATUSES = ['running', 'paused', 'finished', 'failed', 'canceled'];
const MIN_GAP = 350; // ms between two loads of the page
const RUNNING_POLL = 1000; // ms between loads while a flow on the page runs

/** The filters and the page, from the hash's query. */
function paramsOf(query) {
  return {
    status: STATUSES.includes(query.get('status')) ? query.get('status') : '',
    workflow: query.get('workflow') ?? '',
    before: query.get('before') ?? '',
    limit: /^[1-9][0-9]{0,2}$/.test(query.get('limit') ?? '') ? Math.min(500, Number(query.get('limit'))) : PAGE,
  };
}

function hashOf({ status, workflow, before, limit }) {
  const query = new URLSearchParams();
  if (status) query.set('status', status);
  if (workflow) query.set('workflow', workflow);
  if (before) query.set('before', before);
  if (limit !== PAGE) query.set('limit', limit);
  const text = query.toString();
  return text ? `#/?${text}` : '#/';
}

export function mount(main, { query }) {
  let params = paramsOf(query);
  // The `before` of every page seen since the filters last changed, so that
  // "Newer" can step back; a page reloaded from a link starts a new trail.
  let trail = params.before ? ['', params.before] : [''];
  let page = null;
  let counts = null;
  let workflows = [];
  let inFlight = null;
  let lastLoad = 0;
  let timer = null;
  let stopped = false;

  const heading = h('h1', { tabindex: -1 }, 'Flows');
  const summary = h('p', { class: 'summary', testid: 'counts' });
  const statusSelect = h(
    'select',
    { id: 'filter-status', testid: 'filter-status' },
    h('option', { value: '' }, 'All statuses'),
    STATUSES.map((status) => h('option', { value: status }, status)),
  );
  const workflowSelect = h(
    'select',
    { id: 'filter-workflow', testid: 'filter-workflow' },
    h('option', { value: '' }, 'All workflows'),
  );
  const clear = h('button', { type: 'button', class: 'quiet', testid: 'filter-clear' }, 'Clear filters');
  const filters = h(
    'form',
    { class: 'filters', role: 'search', 'aria-label': 'Filter flows', onsubmit: (event) => event.preventDefault() },
    h('label', { for: 'filter-status' }, 'Status'),
    statusSelect,
    h('label', { for: 'filter-workflow' }, 'Workflow'),
    workflowSelect,
    clear,
  );
  const problem = h('p', { class: 'problem', role: 'alert', testid: 'list-error', hidden: true });
  const body = h('tbody', { testid: 'flow-rows' });
  const table = h(
    'table',
    { class: 'flows', testid: 'flow-list' },
    h('caption', { class: 'visually-hidden' }, 'Flows, newest first'),
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        ['Flow', 'Workflow', 'Status', 'Phase', 'Progress', 'Started', 'Duration'].map((title) =>
          h('th', { scope: 'col' }, title),
        ),
      ),
    ),
    body,
  );
  const wrap = h('div', { class: 'table-wrap', hidden: true }, table);
  const empty = h('p', { class: 'empty', testid: 'list-empty', hidden: true });
  const loading = h('p', { class: 'loading', testid: 'list-loading' }, 'Loading flows…');
  const shown = h('span', { testid: 'list-range' });
  const newest = h('button', { type: 'button', testid: 'page-newest' }, '« Newest');
  const newer = h('button', { type: 'button', testid: 'page-newer' }, '‹ Newer');
  const older = h('button', { type: 'button', testid: 'page-older' }, 'Older ›');
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages', hidden: true }, shown, h('span', { class: 'grow' }), newest, newer, older);

  main.append(
    h(
      'div',
      { class: 'view-head' },
      heading,
      h('a', { class: 'button primary', href: '#/start', testid: 'list-start' }, 'Start a flow'),
    ),
    summary,
    filters,
    problem,
    loading,
    wrap,
    empty,
    pager,
  );
  const live = document.getElementById('live');

  function go(next) {
    window.location.hash = hashOf({ ...params, ...next });
  }

  statusSelect.addEventListener('change', () => go({ status: statusSelect.value, before: '' }));
  workflowSelect.addEventListener('change', () => go({ workflow: workflowSelect.value, before: '' }));
  clear.addEventListener('click', () => go({ status: '', workflow: '', before: '' }));
  newest.addEventListener('click', () => go({ before: '' }));
  newer.addEventListener('click', () => {
    const index = trail.indexOf(params.before);
    go({ before: index > 0 ? trail[index - 1] : '' });
  });
  older.addEventListener('click', () => {
    if (!page?.next) return;
    const index = Math.max(0, trail.indexOf(params.before));
    trail = [...trail.slice(0, index + 1), page.next];
    go({ before: page.next });
  });

  function renderFilters() {
    statusSelect.value = params.status;
    for (const option of statusSelect.options) {
      if (!option.value) continue;
      const n = counts?.counts?.[option.value];
      option.textContent = n === undefined ? option.value : `${option.value} (${count(n)})`;
    }
    const names = workflows.map((workflow) => workflow.name);
    if (params.workflow && !names.includes(params.workflow)) names.push(params.workflow);
    const wanted = ['', ...names];
    const have = [...workflowSelect.options].map((option) => option.value);
    if (wanted.join('\n') !== have.join('\n')) {
      replace(
        workflowSelect,
        h('option', { value: '' }, 'All workflows'),
        names.map((name) => h('option', { value: name }, name)),
      );
    }
    workflowSelect.value = params.workflow;
    clear.hidden = !params.status && !params.workflow;
  }

  function renderSummary() {
    if (!counts) return;
    const parts = STATUSES.filter((status) => counts.counts?.[status]).map(
      (status) => `${count(counts.counts[status])} ${status}`,
    );
    summary.textContent = `${count(counts.total)} flow${counts.total === 1 ? '' : 's'} in all${parts.length ? `: ${parts.join(' · ')}` : ''}`;
  }

  function progressCell(flow) {
    const visit = flow.progress ?? { phase: flow.phase, state: 'completed', handlers: [] };
    const handlers = visit.handlers ?? [];
    // The row stands for the flow, so its bars take the flow's tone, but a
    // failed visit is red even before the flow moves on from it.
    const tone = visit.state === 'failed' ? 'failed' : flowTone(flow);
    const cell = h('td', { class: 'progress' });
    if (handlers.length === 0) {
      cell.append(h('span', { class: 'muted', title: `${flow.phase} has no handlers` }, '–'));
    }
    for (const handler of handlers) {
      cell.append(
        h(
          'div',
          { class: 'handler-line' },
          h('span', { class: 'handler-name', title: `${handler.handler}${handler.version ? `@${handler.version}` : ''}` }, handler.handler),
          bar({
            done: handler.done,
            total: handler.total,
            failed: handler.failed,
            ...quietState(flow, visit, [handler]),
            tone,
            label: `${visit.phase}: ${handler.handler}`,
            testid: 'flow-row-progress',
          }),
        ),
      );
    }
    // Only a running flow waits for a worker or a limit: a paused one
    // waits for a resume, and an ended one for nothing.
    if (flow.status === 'running' && flow.waiting?.length) {
      cell.append(h('div', { class: 'waiting' }, waitingBadges(flow.waiting, 'flow-row-waiting')));
    }
    return cell;
  }

  function row(flow) {
    const link = h(
      'a',
      { href: `#/flows/${encodeURIComponent(flow.id)}`, title: flow.id, class: 'mono', dataset: { focusKey: flow.id } },
      shortId(flow.id),
    );
    // The priority only when it is not the default, so that the few
    // urgent flows stand out; the key under the id, cut to the column.
    const priority =
      flow.priority > 0 &&
      h('span', { class: 'priority', title: `priority ${flow.priority} of 9`, testid: 'flow-row-priority' }, `P${flow.priority}`);
    const key =
      typeof flow.key === 'string' &&
      h('span', { class: 'flow-key mono', title: `key: ${flow.key}`, testid: 'flow-row-key' }, flow.key);
    const version =
      Number.isInteger(flow.workflow_version) &&
      h(
        'span',
        { class: 'muted', title: `version ${flow.workflow_version} of ${flow.workflow}`, testid: 'flow-row-version' },
        ` v${flow.workflow_version}`,
      );
    const tr = h(
      'tr',
      { testid: 'flow-row', dataset: { flowId: flow.id, status: flow.status, outcome: flow.outcome }, class: 'clickable' },
      h('td', { class: 'flow-cell' }, h('span', { class: 'flow-line' }, link, priority), key),
      h('td', {}, flow.workflow, version),
      h('td', {}, statusBadge(flow, 'flow-row-status')),
      h('td', {}, flow.phase),
      progressCell(flow),
      h('td', { title: full(flow.created_at), dataset: { at: flow.created_at } }, ago(flow.created_at)),
      h('td', {}, duration(between(flow.created_at, flow.ended_at))),
    );
    tr.addEventListener('click', (event) => {
      if (event.target.closest('a, button')) return;
      if (window.getSelection()?.toString()) return; // selecting text, not opening
      window.location.hash = `#/flows/${encodeURIComponent(flow.id)}`;
    });
    return tr;
  }

  function renderPage() {
    if (!page) return;
    replace(body, page.flows.map(row));
    loading.hidden = true;
    wrap.hidden = page.flows.length === 0;
    empty.hidden = page.flows.length !== 0;
    pager.hidden = page.flows.length === 0 && !params.before;
    const filtered = params.status || params.workflow;
    replace(
      empty,
      params.before
        ? 'No older flows.'
        : filtered
          ? 'No flow matches these filters.'
          : ['No flows yet. ', h('a', { href: '#/start' }, 'Start one'), ', or run ', h('code', {}, 'distribot start WORKFLOW'), '.'],
    );
    const n = page.flows.length;
    shown.textContent = `Showing ${count(n)} of ${count(page.total)} flow${page.total === 1 ? '' : 's'}${filtered ? ' matching' : ''}${params.before ? ', older ones' : ''}`;
    newest.disabled = !params.before;
    newer.disabled = !params.before;
    older.disabled = !page.next;
  }

  async function load() {
    clearTimeout(timer);
    timer = null;
    inFlight?.abort();
    const controller = new AbortController();
    inFlight = controller;
    lastLoad = Date.now();
    try {
      const path = withQuery('/api/flows', params);
      const answer = await call(path, { signal: controller.signal });
      if (controller !== inFlight) return;
      page = answer;
      problem.hidden = true;
      renderPage();
    } catch (error) {
      if (error.name === 'AbortError') return;
      problem.textContent = `Cannot load the flows: ${error.message}`;
      problem.hidden = false;
    } finally {
      if (controller === inFlight) inFlight = null;
    }
  }

  /** Loads the page soon, at most once per MIN_GAP. */
  function schedule() {
    if (stopped || timer) return;
    const wait = Math.max(0, lastLoad + MIN_GAP - Date.now());
    timer = setTimeout(() => {
      timer = null;
      if (!stopped) load();
    }, wait);
  }

  const stopEvents = follow('/api/events', {
    onState: (state) => {
      if (live && !stopped) live.dataset.state = state;
      if (live && !stopped) live.textContent = state === 'live' ? 'live' : state === 'reconnecting' ? 'reconnecting…' : '';
      // A broken stream may have missed changes.
      if (state === 'live') schedule();
    },
    onEvent: (name, data) => {
      if (name === 'refresh') {
        counts = data;
        renderSummary();
        renderFilters();
        schedule();
      } else if (name === 'flow') {
        const onPage = page?.flows.some((flow) => flow.id === data.id);
        if (onPage || params.status) schedule();
      }
    },
  });

  const poll = setInterval(() => {
    if (document.hidden) return;
    if (page?.flows.some((flow) => flow.status === 'running')) schedule();
    else if (page) renderTimes();
  }, RUNNING_POLL);

  /** Ages move on even when nothing else does. */
  function renderTimes() {
    for (const cell of body.querySelectorAll('td[data-at]')) cell.textContent = ago(cell.dataset.at);
  }

  call('/api/workflows')
    .then((answer) => {
      workflows = answer?.workflows ?? [];
      renderFilters();
    })
    .catch(() => {});

  document.title = 'Flows · distribot';
  renderFilters();
  load();

  return {
    update(next) {
      const before = params;
      params = paramsOf(next.query);
      const refiltered = ['status', 'workflow', 'limit'].some((key) => params[key] !== before[key]);
      if (refiltered) trail = [''];
      else if (params.before && !trail.includes(params.before)) trail = ['', params.before];
      renderFilters();
      load();
    },
    unmount() {
      stopped = true;
      stopEvents();
      clearInterval(poll);
      clearTimeout(timer);
      inFlight?.abort();
      if (live) {
        live.dataset.state = 'idle';
        live.textContent = '';
      }
    },
  };
}
