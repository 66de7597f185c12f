// The live workers: what each hosts and when it last announced itself,
// loaded again every few seconds.

import { call } from './client.js';
import { h, replace } from './dom.js';
import { ago, full } from './format.js';

const RELOAD = 3000;

export function mount(main) {
  let stopped = false;
  let workers = null;

  const heading = h('h1', { tabindex: -1 }, 'Workers');
  const intro = h(
    'p',
    { class: 'hint intro' },
    'Workers announce themselves every few seconds and count as live for 10 s after; this list is loaded again every 3 s.',
  );
  const body = h('tbody', {});
  const table = h(
    'table',
    { class: 'workers', testid: 'workers-table' },
    h('caption', { class: 'visually-hidden' }, 'Live workers'),
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        ['Worker', 'Host', 'PID', 'Handlers', 'Started', 'Last heartbeat'].map((title) => h('th', { scope: 'col' }, title)),
      ),
    ),
    body,
  );
  const empty = h('p', { class: 'empty', testid: 'workers-empty', hidden: true });
  const problem = h('p', { class: 'problem', role: 'alert', testid: 'workers-error', hidden: true });
  const wrap = h('div', { class: 'table-wrap', hidden: true }, table);
  main.append(h('div', { class: 'view-head' }, heading), intro, problem, wrap, empty);

  function render() {
    if (!workers) return;
    wrap.hidden = workers.length === 0;
    empty.hidden = workers.length !== 0;
    replace(
      empty,
      'No live worker. Run ',
      h('code', {}, 'distribot worker --handlers FILE'),
      ', or serve with ',
      h('code', {}, '--handlers FILE'),
      '.',
    );
    replace(
      body,
      workers.map((worker) =>
        h(
          'tr',
          { testid: 'worker-row', dataset: { workerId: worker.id } },
          h('td', { class: 'mono', testid: 'worker-id' }, worker.id),
          h('td', { testid: 'worker-host' }, worker.host),
          h('td', { class: 'num', testid: 'worker-pid' }, String(worker.pid)),
          h(
            'td',
            { testid: 'worker-handlers' },
            h(
              'ul',
              { class: 'chips' },
              worker.handlers.map((handler) => h('li', { class: 'chip' }, `${handler.name}@${handler.version}`)),
            ),
          ),
          h('td', { title: full(worker.started_at) }, ago(worker.started_at)),
          h('td', { title: full(worker.last_seen), testid: 'worker-last-seen', dataset: { at: worker.last_seen } }, ago(worker.last_seen)),
        ),
      ),
    );
  }

  async function load() {
    try {
      const answer = await call('/api/workers');
      if (stopped) return;
      workers = [...(answer?.workers ?? [])].sort((a, b) => a.host.localeCompare(b.host) || a.id.localeCompare(b.id));
      problem.hidden = true;
      render();
    } catch (error) {
      if (stopped) return;
      problem.textContent = `Cannot load the workers: ${error.message}`;
      problem.hidden = false;
    }
  }

  const reload = setInterval(() => {
    if (!document.hidden) load();
  }, RELOAD);
  const tick = setInterval(() => {
    for (const cell of body.querySelectorAll('[data-at]')) cell.textContent = ago(cell.dataset.at);
  }, 1000);

  document.title = 'Workers · distribot';
  load();

  return {
    unmount() {
      stopped = true;
      clearInterval(reload);
      clearInterval(tick);
    },
  };
}
