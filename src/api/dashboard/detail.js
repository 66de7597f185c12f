// One flow: its status, key, priority and deadline, what it waits for,
// its actions (pause, resume, cancel, and retry once it failed), the
// workflow graph with the current phase, the timeline of its phase visits
// with their handlers' counts and the commands that steered it, jobs per
// handler, the error and the input data. Kept live by the flow's event
// stream (`progress`, `transition`, `end`); commands and end times are not
// in the events, so the page loads the flow again when its status changes.

import { call, follow, segment } from './client.js';
import { bar, flowTone, h, onErrorPath, outcomeOf, quietState, replace, statusBadge, waitingBadges } from './dom.js';
import { between, clock, count, duration, full } from './format.js';
import { drawGraph, legend } from './graph.js';

const PAST = { pause: 'Paused', resume: 'Resumed', cancel: 'Canceled' };
/** A command of the flow's history, as the timeline says it. */
const COMMANDS = { pause: 'paused', resume: 'resumed', cancel: 'canceled' };

/**
 * Whether the flow can be retried: it failed, or finished through an
 * error transition since it was last retried. A canceled flow stays
 * canceled.
 */
function retryable(flow) {
  const over = flow.status === 'failed' || flow.status === 'finished';
  return over && (flow.outcome ?? outcomeOf(flow.status, flow.took_error_transition)) === 'failed';
}

/** The phase a retry goes back to: the one that failed. */
function failedPhase(flow) {
  if (flow.status === 'failed') return flow.phase;
  for (let index = flow.transitions.length - 1; index >= 0; index -= 1) {
    const transition = flow.transitions[index];
    if (transition.retried_by) break;
    if (transition.error) return transition.from;
  }
  return flow.phase;
}

/**
 * The `seq`s of the visits a retry ran again: for each retry, the latest
 * failed visit of the phase it went back to. The retry's own visit counts
 * their jobs (it carries those that were done), so they count no more.
 */
function supersededVisits(flow) {
  const seqs = new Set();
  flow.transitions.forEach((transition, index) => {
    if (!transition.retried_by) return;
    for (let earlier = index - 1; earlier >= 0; earlier -= 1) {
      const visit = flow.phases[earlier];
      if (visit && visit.phase === transition.to && visit.state === 'failed') {
        seqs.add(earlier);
        break;
      }
    }
  });
  return seqs;
}

/**
 * For each transition, whether the visit it led into is on the error path:
 * from an error transition on, until a retry sends the flow back.
 */
function errorPathOf(transitions) {
  let onPath = false;
  return transitions.map((transition) => {
    if (transition.retried_by) onPath = false;
    if (transition.error) onPath = true;
    return onPath;
  });
}

function sum(handlers, field) {
  return handlers.reduce((total, handler) => total + (handler[field] ?? 0), 0);
}

/**
 * Lays the visits a `progress` event says changed over the ones known, by
 * `seq`: the events carry only what changed, not the whole history.
 */
function mergeVisits(visits, changed) {
  for (const visit of changed) {
    if (visits[visit.seq]?.seq === visit.seq) {
      visits[visit.seq] = visit;
      continue;
    }
    const at = visits.findIndex((known) => known.seq >= visit.seq);
    if (at < 0) visits.push(visit);
    else if (visits[at].seq === visit.seq) visits[at] = visit;
    else visits.splice(at, 0, visit);
  }
}

/** Every child flow the visits of `flow` started, in order. */
function childrenOf(flow) {
  return (flow.phases ?? []).flatMap((visit) => visit.children ?? []);
}

/** Links to child flows, each marked with how it ended; the first 50. */
function childLinks(children) {
  const shown = children.slice(0, 50).map((child) => {
    const mark = child.ended_well === true ? '✓' : child.ended_well === false ? '✗' : '…';
    return h('li', {}, [
      h('a', { href: `#/flows/${encodeURIComponent(child.flow)}`, class: 'mono', title: child.flow }, child.flow),
      ` ${mark}`,
    ]);
  });
  const rest = children.length - shown.length;
  return [h('ul', { class: 'children' }, shown), rest > 0 && h('p', {}, `and ${rest} more`)];
}

/** A flow's priority: `P7` stands out, the default does not. */
function priorityText(priority) {
  const title = 'From 0 (the default) to 9: workers take the jobs of higher-priority flows first';
  return priority > 0
    ? h('span', { class: 'priority', title }, `P${priority}`)
    : h('span', { class: 'muted', title }, '0 (default)');
}

/** How long until `at`: `in 4 m 10 s`, or `passed`. */
function untilText(at) {
  const left = Date.parse(at) - Date.now();
  return left > 0 ? `in ${duration(left)}` : 'passed';
}

function transitionKey(transition) {
  return `${transition.from ?? ''}→${transition.to}@${transition.at}`;
}

function describeError(error) {
  if (!error) return '';
  const where = [`phase ${error.phase}`];
  if (error.handler) where.push(`handler ${error.handler}`);
  if (error.job_id) where.push(`job ${error.job_id}`);
  // A timeout fails a phase without any attempt to count.
  const after = error.attempts ? ` after ${error.attempts} attempt${error.attempts === 1 ? '' : 's'}` : '';
  return `${where.join(', ')} failed${after}: ${error.message}`;
}

export function mount(main, { id }) {
  let flow = null;
  let ended = false;
  let busy = false;
  let confirming = false;
  let stopEvents = () => {};
  let streaming = false;
  let reloadTimer = 0;
  let frame = 0;
  let graphKey = '';
  let stopped = false;
  // What a command's answer said, against a `progress` event read just
  // before the command took effect and delivered just after the answer.
  let pinned = null;

  const path = `/api/flows/${segment(id)}`;
  const heading = h('h1', { tabindex: -1 }, 'Flow ', h('code', { class: 'flow-id', testid: 'flow-id' }, id));
  const status = h('span', { testid: 'flow-status-wrap' });
  const facts = h('dl', { class: 'facts', testid: 'flow-facts' });
  const overall = h('div', { class: 'overall' });
  const waiting = h('ul', { class: 'waiting', testid: 'flow-waiting', 'aria-label': 'Why the flow waits', hidden: true });

  const pause = h('button', { type: 'button', testid: 'action-pause' }, 'Pause');
  const resume = h('button', { type: 'button', testid: 'action-resume' }, 'Resume');
  const cancel = h('button', { type: 'button', class: 'danger', testid: 'action-cancel' }, 'Cancel…');
  const retry = h('button', { type: 'button', class: 'primary', testid: 'action-retry', hidden: true }, 'Retry');
  const retryScratch = h('button', { type: 'button', testid: 'action-retry-scratch', hidden: true }, 'Retry from scratch');
  const confirmCancel = h('button', { type: 'button', class: 'danger', testid: 'action-cancel-confirm' }, 'Cancel the flow');
  const keep = h('button', { type: 'button', testid: 'action-cancel-keep' }, 'Keep it');
  const confirmRow = h(
    'div',
    { class: 'confirm', role: 'group', 'aria-labelledby': 'confirm-text', hidden: true, testid: 'cancel-confirm' },
    h('span', { id: 'confirm-text' }, 'Cancel this flow? Its queued jobs are dropped and it ends as canceled.'),
    confirmCancel,
    keep,
  );
  const message = h('p', { class: 'message', role: 'status', testid: 'action-message' });
  const actionError = h('p', { class: 'problem', role: 'alert', testid: 'action-error', hidden: true });
  const again = h('a', { class: 'button', testid: 'action-again' }, 'Start another');
  // A flow whose phase waits for a signal: send it from here, with a payload.
  const signalName = h('code', { testid: 'signal-name' });
  const signalData = h('textarea', {
    id: 'signal-data',
    rows: 3,
    spellcheck: 'false',
    testid: 'signal-data',
    placeholder: '{"by": "ana"}',
  });
  const signalSend = h('button', { type: 'button', class: 'primary', testid: 'signal-send' }, 'Send signal');
  const signalForm = h(
    'div',
    { class: 'signal-form', role: 'group', 'aria-label': 'Send the signal the flow waits for', hidden: true, testid: 'signal-form' },
    h('label', { for: 'signal-data' }, 'The flow waits for the signal ', signalName, '. Its data (JSON, optional):'),
    signalData,
    signalSend,
  );
  const actions = h(
    'div',
    { class: 'actions', role: 'group', 'aria-label': 'Actions' },
    pause,
    resume,
    cancel,
    retry,
    retryScratch,
    h('span', { class: 'grow' }),
    again,
  );

  const errorBox = h('section', { class: 'error-box', testid: 'flow-error', hidden: true, 'aria-labelledby': 'error-title' });
  const graphWrap = h('div', { class: 'graph-wrap', testid: 'graph-wrap' });
  const timeline = h('ol', { class: 'timeline', testid: 'timeline' });
  const totalsHead = h(
    'thead',
    {},
    h(
      'tr',
      {},
      ['Done', 'Failed', 'Retried'].map((title) => h('th', { scope: 'col' }, title)),
    ),
  );
  // Each handler's name has a row of its own above its counts: the card is
  // narrow, and long names beside four-digit counts pushed the last column
  // out of it.
  const totals = h('table', { class: 'totals', testid: 'handler-totals' }, totalsHead);
  const dataBlock = h('pre', { class: 'data', testid: 'flow-data' });
  const problem = h('p', { class: 'problem', role: 'alert', testid: 'detail-error', hidden: true });

  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/', testid: 'back-to-list' }, '← All flows')),
    h('div', { class: 'view-head' }, heading, status),
    problem,
    h(
      'section',
      { class: 'card summary-card', 'aria-label': 'Summary', testid: 'flow-detail' },
      waiting,
      facts,
      overall,
      actions,
      confirmRow,
      signalForm,
      message,
      actionError,
    ),
    errorBox,
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'graph-heading' },
      h('h2', { id: 'graph-heading' }, 'Workflow'),
      graphWrap,
      legend(),
    ),
    h(
      'div',
      { class: 'columns' },
      h(
        'section',
        { class: 'card', 'aria-labelledby': 'timeline-heading' },
        h('h2', { id: 'timeline-heading' }, 'Timeline'),
        timeline,
      ),
      h(
        'section',
        { class: 'card narrow', 'aria-labelledby': 'totals-heading' },
        h('h2', { id: 'totals-heading' }, 'Jobs per handler'),
        totals,
        h('details', { class: 'data-details' }, h('summary', {}, 'Input data'), dataBlock),
      ),
    ),
  );

  // -------------------------------------------------------------- render

  function renderStatus() {
    replace(status, statusBadge(flow, 'flow-status'));
    const created = flow.created_at;
    const endedAt = flow.ended_at;
    const fact = (term, value, testid) => [h('dt', {}, term), h('dd', { testid }, value)];
    replace(
      facts,
      fact('Workflow', h('a', { href: `#/?workflow=${encodeURIComponent(flow.workflow)}` }, flow.workflow), 'flow-workflow'),
      // The registered version the flow started with and runs to its end;
      // none for a definition given inline.
      Number.isInteger(flow.workflow_version) && fact('Version', String(flow.workflow_version), 'flow-workflow-version'),
      fact('Phase', flow.phase, 'flow-phase'),
      Number.isInteger(flow.priority) && fact('Priority', priorityText(flow.priority), 'flow-priority'),
      typeof flow.key === 'string' && fact('Key', h('code', { class: 'flow-key', title: flow.key }, flow.key), 'flow-key'),
      fact('Started', h('time', { datetime: created, title: full(created) }, clock(created)), 'flow-created'),
      endedAt
        ? fact(
            'Ended',
            h('time', { datetime: endedAt, title: full(endedAt) }, `${clock(endedAt)} (after ${duration(between(created, endedAt))})`),
            'flow-ended',
          )
        : fact('Duration', [h('span', { dataset: { since: created } }, duration(between(created))), ' so far'], 'flow-ended'),
      flow.outputs_count !== undefined && fact('Outputs', count(flow.outputs_count), 'flow-outputs'),
      flow.deadline && fact('Deadline', deadlineText(flow.deadline), 'flow-deadline'),
      ended && fact('Outcome', flow.ended_well ? 'ended well' : 'did not end well', 'flow-outcome'),
      // Sub-workflows, linked both ways: the flow whose phase started this
      // one, and the children this flow's visits started.
      flow.parent && fact(
        'Parent',
        [
          h('a', { href: `#/flows/${encodeURIComponent(flow.parent.flow)}`, class: 'mono', title: flow.parent.flow }, flow.parent.flow),
          ` (visit ${flow.parent.seq + 1}, element ${flow.parent.index})`,
        ],
        'flow-parent',
      ),
      childrenOf(flow).length > 0 && fact('Children', childLinks(childrenOf(flow)), 'flow-children'),
    );
    const superseded = supersededVisits(flow);
    const handlers = flow.phases.filter((visit, index) => !superseded.has(index)).flatMap((visit) => visit.handlers);
    const current = flow.phases[flow.phases.length - 1];
    // With no jobs at all, the bar says why: an ended flow by its outcome,
    // a live one by its current visit.
    const quiet = ended
      ? { pending: false, idle: { failed: 'failed', canceled: 'canceled' }[flow.outcome] ?? '' }
      : current
        ? quietState(flow, current)
        : { pending: false, idle: '' };
    replace(
      overall,
      h('span', { class: 'overall-label', id: 'overall-label' }, ended ? 'Jobs done' : 'Jobs done so far'),
      bar({
        done: sum(handlers, 'done'),
        total: sum(handlers, 'total'),
        failed: sum(handlers, 'failed'),
        ...quiet,
        tone: flowTone(flow),
        label: 'Jobs done in every phase so far',
        testid: 'flow-progress',
        open: !ended,
      }),
    );
    // Only a running flow waits for a worker or a limit: a paused one
    // waits for a resume, and an ended one for nothing.
    const notes = flow.status === 'running' ? (flow.waiting ?? []) : [];
    replace(waiting, waitingBadges(notes, 'flow-waiting-note').map((badge) => h('li', {}, badge)));
    waiting.hidden = notes.length === 0;
  }

  /** When the deadline falls, and while the flow runs, how far off it is. */
  function deadlineText(deadline) {
    const at = h('time', { datetime: deadline, title: full(deadline) }, clock(deadline));
    if (ended) return at;
    return [at, ' (', h('span', { dataset: { until: deadline } }, untilText(deadline)), ')'];
  }

  function renderActions() {
    const known = flow !== null;
    pause.disabled = !known || busy || flow.status !== 'running';
    resume.disabled = !known || busy || flow.status !== 'paused';
    const cancelable = known && (flow.status === 'running' || flow.status === 'paused');
    cancel.disabled = !cancelable || busy;
    if (!cancelable) confirming = false;
    // Retry is offered only where it applies: a flow that ended failed.
    const canRetry = known && retryable(flow);
    retry.hidden = !canRetry;
    retryScratch.hidden = !canRetry;
    retry.disabled = !canRetry || busy;
    retryScratch.disabled = !canRetry || busy;
    if (canRetry) {
      const phase = failedPhase(flow);
      retry.title = `Run ${phase} again as a new visit; the jobs it did stay done`;
      retryScratch.title = `Run every job of ${phase} again`;
    }
    // The signal the current phase waits for, while it does.
    const awaited = known && flow.status === 'running' ? flow.definition?.phases?.[flow.phase]?.wait_for : undefined;
    const waitsNow = typeof awaited === 'string' && flow.progress?.state === 'running';
    signalForm.hidden = !waitsNow;
    if (waitsNow) signalName.textContent = awaited;
    signalSend.disabled = !waitsNow || busy;
    confirmRow.hidden = !confirming;
    confirmCancel.disabled = busy;
    keep.disabled = busy;
    if (known) again.setAttribute('href', `#/start?workflow=${encodeURIComponent(flow.workflow)}`);
  }

  function renderError() {
    const error = flow.error;
    errorBox.hidden = !error;
    if (!error) return;
    const row = (term, value) => value !== null && value !== undefined && [h('dt', {}, term), h('dd', {}, String(value))];
    replace(
      errorBox,
      h('h2', { id: 'error-title' }, 'Error'),
      h('p', { class: 'error-message', testid: 'flow-error-message' }, error.message),
      h(
        'dl',
        { class: 'facts' },
        row('Phase', error.phase),
        row('Handler', error.handler),
        row('Job', error.job_id),
        row('Attempts', error.attempts),
      ),
    );
  }

  function renderGraph() {
    const visited = new Set(flow.phases.map((visit) => visit.phase));
    // A phase is outlined red while its latest visit failed: once a retry
    // got through it, it is not.
    const latest = new Map(flow.phases.map((visit) => [visit.phase, visit.state]));
    const failed = new Set([...latest].filter(([, state]) => state === 'failed').map(([phase]) => phase));
    const errorPath = onErrorPath(flow);
    const key = JSON.stringify([flow.phase, flow.outcome, errorPath, [...visited], [...failed]]);
    if (key === graphKey) return;
    graphKey = key;
    replace(graphWrap, drawGraph(flow.definition, { current: flow.phase, visited, failed, outcome: flow.outcome, errorPath }));
  }

  /** How long a handler ran; still counting while it runs. */
  function handlerTime(handler, visit) {
    if (!handler.started_at) return '–';
    const until = handler.finished_at ?? visit.finished_at ?? flow.ended_at;
    if (until) return duration(between(handler.started_at, until));
    return h('span', { dataset: { since: handler.started_at } }, duration(between(handler.started_at)));
  }

  /**
   * The tone of a visit's bars: a failed visit is red, one a pause or an
   * end stopped takes that colour, and every visit from an error
   * transition on is on the error path, even when it completed, until a
   * retry sends the flow back.
   */
  function visitTone(visit, index, errorPath) {
    if (visit.state === 'failed') return 'failed';
    if (visit.state === 'running' && flow.status === 'paused') return 'paused';
    if (visit.state === 'running' && ended) return 'canceled';
    if (errorPath[index]) return 'error-path';
    return '';
  }

  /** A handler that did every one of its jobs keeps its colour in a failed visit. */
  function handlerTone(handler, visit, tone) {
    const whole = handler.enumerated && handler.total > 0 && handler.failed === 0 && handler.done === handler.total;
    return visit.state === 'failed' && whole ? '' : tone;
  }

  function handlerTable(visit, tone) {
    return h(
      'table',
      { class: 'handlers' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['Handler', 'Progress', 'Done', 'Failed', 'Retried', 'Time'].map((title) => h('th', { scope: 'col' }, title)),
        ),
      ),
      h(
        'tbody',
        {},
        visit.handlers.map((handler) =>
          h(
            'tr',
            { testid: 'visit-handler', dataset: { handler: handler.handler } },
            h(
              'th',
              { scope: 'row' },
              handler.handler,
              handler.version && h('span', { class: 'version' }, `@${handler.version}`),
            ),
            h(
              'td',
              {},
              bar({
                done: handler.done,
                total: handler.total,
                failed: handler.failed,
                ...quietState(flow, visit, [handler]),
                tone: handlerTone(handler, visit, tone),
                label: `${visit.phase}: ${handler.handler}`,
                testid: 'handler-progress',
              }),
            ),
            h('td', { class: 'num', testid: 'handler-done' }, count(handler.done)),
            h('td', { class: `num${handler.failed ? ' bad' : ''}`, testid: 'handler-failed' }, count(handler.failed)),
            h('td', { class: `num${handler.retried ? ' warn' : ''}`, testid: 'handler-retried' }, count(handler.retried)),
            h(
              'td',
              { class: 'num' },
              handlerTime(handler, visit),
            ),
          ),
        ),
      ),
    );
  }

  /** A pause, resume or cancel, between the visits it came between. */
  function commandEntry(command) {
    const known = Object.hasOwn(COMMANDS, command.command);
    const done = known ? COMMANDS[command.command] : String(command.command);
    return h(
      'li',
      {
        class: `step step-command command-${known ? command.command : 'other'}`,
        testid: 'timeline-command',
        dataset: { command: command.command, by: command.by },
      },
      h(
        'div',
        { class: 'step-head' },
        h('time', { datetime: command.at, title: full(command.at) }, clock(command.at, true)),
        h('span', { class: 'step-what' }, `${done} by ${command.by}`),
      ),
    );
  }

  /**
   * The visits in order, and between them the commands, each where its
   * time puts it (a command at the very time of a transition after it).
   */
  function renderTimeline() {
    // Visit n is the one transition n led into.
    const errorPath = errorPathOf(flow.transitions);
    const commands = [...(flow.commands ?? [])];
    const entries = [];
    const commandsBefore = (at) => {
      const limit = at === undefined ? Infinity : Date.parse(at);
      while (commands.length > 0 && !(Date.parse(commands[0].at) >= limit)) entries.push(commandEntry(commands.shift()));
    };
    flow.transitions.forEach((transition, index) => {
      commandsBefore(transition.at);
      entries.push(visitEntry(transition, index, errorPath));
    });
    commandsBefore(undefined);
    replace(timeline, entries);
  }

  /** One transition and the visit it led into. */
  function visitEntry(transition, index, errorPath) {
    const visit = flow.phases[index];
    const next = flow.transitions[index + 1];
    const until = next?.at ?? flow.ended_at;
    const open = !until && !ended;
    const spent = open
      ? h('span', { class: 'running-for', dataset: { since: transition.at } }, duration(between(transition.at)))
      : duration(between(transition.at, until ?? transition.at));
    // A visit that a cancel cut short, or that waits on a pause, still
    // says `running`.
    let state = visit?.state ?? '';
    if (state === 'running' && ended) state = 'stopped';
    else if (state === 'running' && flow.status === 'paused') state = 'paused';
    const handlers = visit?.handlers ?? [];
    const current = index === flow.transitions.length - 1;
    const tone = visit ? visitTone(visit, index, errorPath) : '';
    // Next to the visit's bar, so that the red and its reason are read together.
    const failure =
      visit?.error && h('p', { class: 'step-error-text', testid: 'visit-error' }, describeError(visit.error));
    const retriedBy = transition.retried_by;
    return h(
      'li',
      {
        class: `step step-${state}${transition.error ? ' step-error' : ''}${retriedBy ? ' step-retry' : ''}${tone === 'error-path' ? ' step-error-path' : ''}${current ? ' step-current' : ''}`,
        testid: 'timeline-entry',
        dataset: { phase: transition.to, seq: index, ...(retriedBy ? { retriedBy } : {}) },
      },
      h(
        'div',
        { class: 'step-head' },
        h('time', { datetime: transition.at, title: full(transition.at) }, clock(transition.at, true)),
        h(
          'span',
          { class: 'step-what' },
          transition.from === null
            ? 'started in '
            : [h('span', { class: 'from' }, transition.from), transition.error ? ' ⇢ ' : retriedBy ? ' ↻ ' : ' → '],
          h('strong', {}, transition.to),
        ),
        h('span', { class: 'step-duration', title: 'time spent in this phase' }, spent),
        state && h('span', { class: `visit-state state-${state}` }, state),
        retriedBy &&
          h(
            'span',
            { class: 'retried', testid: 'timeline-retried', title: `A retry sent the flow back to ${transition.to}` },
            `retried by ${retriedBy}`,
          ),
      ),
      transition.error &&
        h(
          'p',
          { class: 'step-error-text' },
          // The failed visit above already says what failed.
          flow.phases[index - 1]?.error ? 'entered on error' : `entered on error: ${describeError(transition.error)}`,
        ),
      handlers.length > 0
        ? h(
            'div',
            { class: 'visit', testid: 'visit', dataset: { phase: transition.to, state: visit.state } },
            bar({
              done: sum(handlers, 'done'),
              total: sum(handlers, 'total'),
              failed: sum(handlers, 'failed'),
              ...quietState(flow, visit),
              tone,
              label: `Visit ${index + 1}, ${transition.to}`,
              testid: 'visit-progress',
            }),
            failure,
            handlerTable(visit, tone),
          )
        : failure,
    );
  }

  function renderTotals() {
    const names = Object.keys(flow.handlers ?? {});
    replace(
      totals,
      totalsHead,
      names.length === 0
        ? h('tbody', {}, h('tr', {}, h('td', { colspan: 3, class: 'muted' }, 'No handler has run yet.')))
        : names.map((name) => {
            const t = flow.handlers[name];
            return h(
              'tbody',
              { testid: 'handler-total', dataset: { handler: name } },
              h('tr', { class: 'total-name' }, h('th', { scope: 'rowgroup', colspan: 3, title: name }, name)),
              h(
                'tr',
                {},
                // Two unbreakable halves, so that huge counts wrap at the slash
                // rather than run out of the card.
                h('td', { class: 'num done' }, h('span', {}, count(t.done)), ' ', h('span', {}, `/ ${count(t.total)}`)),
                h('td', { class: `num${t.failed ? ' bad' : ''}` }, count(t.failed)),
                h('td', { class: `num${t.retried ? ' warn' : ''}` }, count(t.retried)),
              ),
            );
          }),
    );
  }

  function render() {
    frame = 0;
    if (!flow || stopped) return;
    renderStatus();
    renderActions();
    renderError();
    renderGraph();
    renderTimeline();
    renderTotals();
  }

  function renderSoon() {
    if (!frame) frame = requestAnimationFrame(render);
  }

  /** Running durations and the time left tick without a new render. */
  const tick = setInterval(() => {
    for (const node of main.querySelectorAll('[data-since]')) {
      node.textContent = duration(between(node.dataset.since));
    }
    for (const node of main.querySelectorAll('[data-until]')) {
      node.textContent = untilText(node.dataset.until);
    }
  }, 1000);

  // -------------------------------------------------------------- actions

  /**
   * Sends a command: `pause`, `resume`, `cancel` or `retry` (with
   * `fromScratch`). The page then loads the flow again, since the command
   * is in its history now, and a retry runs it again.
   */
  async function command(verb, { fromScratch = false } = {}) {
    busy = true;
    confirming = false;
    message.textContent = '';
    actionError.hidden = true;
    delete actionError.dataset.code;
    renderActions();
    try {
      const before = flow?.status;
      const request = verb === 'retry' ? { method: 'POST', body: { from_scratch: fromScratch } } : { method: 'POST' };
      const answer = await call(`${path}/${verb}`, request);
      if (flow && answer?.status) {
        flow.status = answer.status;
        if (verb === 'retry') {
          // Running again, from the phase that failed: its failure is history.
          Object.assign(flow, { phase: answer.phase, ended_at: null, error: null, took_error_transition: false });
          ended = false;
        } else {
          pinned = { status: answer.status, before, until: Date.now() + 1000 };
        }
        settle();
      }
      message.textContent =
        verb === 'retry'
          ? `Retried${answer?.from_scratch ? ' from scratch' : ''}: the flow went back to ${answer?.phase ?? 'the phase that failed'}.`
          : `${PAST[verb]}.`;
      reload().catch(() => {});
    } catch (error) {
      const what = verb === 'retry' && fromScratch ? 'retry the flow from scratch' : `${verb} the flow`;
      actionError.textContent = `Could not ${what}: ${error.message}`;
      actionError.dataset.code = error.code;
      actionError.hidden = false;
      // A refusal means this page was behind: catch up.
      if (error.status === 409) reload().catch(() => {});
    } finally {
      busy = false;
      render();
      // The retry buttons go once the flow runs again: keep the focus on
      // the actions rather than lose it to the page.
      const lost = [retry, retryScratch].includes(document.activeElement) || !main.contains(document.activeElement);
      if (verb === 'retry' && retry.hidden && lost) {
        (pause.disabled ? heading : pause).focus();
      }
    }
  }

  /** Sends the signal the flow waits for, with the form's JSON as its data. */
  async function sendSignal() {
    const name = signalName.textContent;
    const text = signalData.value.trim();
    let data = null;
    if (text !== '') {
      try {
        data = JSON.parse(text);
      } catch (error) {
        actionError.textContent = `The signal's data is not valid JSON: ${error.message}`;
        actionError.dataset.code = 'invalid_json';
        actionError.hidden = false;
        return;
      }
    }
    busy = true;
    message.textContent = '';
    actionError.hidden = true;
    delete actionError.dataset.code;
    renderActions();
    try {
      const answer = await call(`${path}/signals/${segment(name)}`, { method: 'POST', body: { data } });
      message.textContent =
        answer?.outcome === 'consumed'
          ? `Signal ${name} sent: the flow goes on.`
          : `Signal ${name} sent: ${answer?.outcome === 'kept' ? 'kept until a phase waits for it' : 'it came before'}.`;
      signalData.value = '';
      reload().catch(() => {});
    } catch (error) {
      actionError.textContent = `Could not send the signal: ${error.message}`;
      actionError.dataset.code = error.code;
      actionError.hidden = false;
      if (error.status === 409) reload().catch(() => {});
    } finally {
      busy = false;
      render();
    }
  }

  signalSend.addEventListener('click', () => sendSignal());
  pause.addEventListener('click', () => command('pause'));
  resume.addEventListener('click', () => command('resume'));
  retry.addEventListener('click', () => command('retry'));
  retryScratch.addEventListener('click', () => command('retry', { fromScratch: true }));
  cancel.addEventListener('click', () => {
    confirming = true;
    renderActions();
    confirmCancel.focus();
  });
  keep.addEventListener('click', () => {
    confirming = false;
    renderActions();
    cancel.focus();
  });
  confirmCancel.addEventListener('click', () => command('cancel'));

  // ----------------------------------------------------------- live data

  const seen = new Set();

  /** Events and command answers carry a status but no outcome. */
  function settle() {
    flow.outcome = outcomeOf(flow.status, flow.took_error_transition);
  }

  function adopt(detail) {
    flow = detail;
    // An older server answers without an outcome.
    flow.took_error_transition ??= detail.transitions.some((transition) => transition.error);
    flow.outcome ??= outcomeOf(flow.status, flow.took_error_transition);
    ended = ['finished', 'failed', 'canceled'].includes(detail.status);
    seen.clear();
    for (const transition of detail.transitions) seen.add(transitionKey(transition));
  }

  /** Loads the whole flow, and follows its events while it has not ended. */
  async function reload() {
    clearTimeout(reloadTimer);
    reloadTimer = 0;
    const detail = await call(path);
    if (stopped) return;
    adopt(detail);
    dataBlock.textContent = JSON.stringify(detail.data, null, 2);
    render();
    if (!ended) startEvents();
  }

  /** Loads the flow again soon, once however many changes ask for it. */
  function reloadSoon() {
    if (reloadTimer || stopped) return;
    reloadTimer = setTimeout(() => {
      reloadTimer = 0;
      reload().catch(() => {});
    }, 200);
  }

  function onEvent(name, data) {
    if (!flow) return;
    if (name === 'transition') {
      const key = transitionKey(data);
      if (!seen.has(key)) {
        seen.add(key);
        flow.transitions.push(data);
        // An error since the last retry is what makes the flow's outcome.
        if (data.retried_by) flow.took_error_transition = false;
        if (data.error) flow.took_error_transition = true;
      }
    } else if (name === 'progress') {
      const stale = pinned && Date.now() < pinned.until && data.status === pinned.before;
      const { changed_phases: changed = [], ...moving } = data;
      const was = flow.status;
      mergeVisits(flow.phases, changed);
      Object.assign(flow, moving, stale ? { status: pinned.status } : {});
      // Paused or resumed elsewhere: the command is in the flow's history.
      if (flow.status !== was && !busy) reloadSoon();
    } else if (name === 'end') {
      Object.assign(flow, { status: data.status, phase: data.phase, ended_well: data.ended_well, error: data.error });
      // Whether it ended well says what a missed transition event would have.
      if (data.status === 'finished') flow.took_error_transition = !data.ended_well;
      ended = true;
      // The end time and the outputs are not in the events.
      reload().catch(() => {});
    }
    settle();
    renderSoon();
  }

  /** Follows the flow's events, unless a stream already does. */
  function startEvents() {
    if (streaming || stopped) return;
    streaming = true;
    stopEvents = follow(`${path}/events`, {
      onEvent,
      finished: () => ended,
      onState: (state) => {
        if (state === 'closed') streaming = false;
        // After a break, catch up with what the events missed.
        if (state === 'reconnecting' && !stopped) message.textContent = 'Connection lost; reconnecting…';
        if (state === 'live' && message.textContent.startsWith('Connection lost')) message.textContent = '';
      },
    });
  }

  document.title = `Flow ${id} · distribot`;
  renderActions();
  reload().catch((error) => {
    problem.hidden = false;
    replace(
      problem,
      error.status === 404 ? `There is no flow with the id ${id}. ` : `Cannot load the flow: ${error.message} `,
      h('a', { href: '#/' }, 'Back to the list'),
    );
  });

  return {
    unmount() {
      stopped = true;
      stopEvents();
      clearInterval(tick);
      clearTimeout(reloadTimer);
      if (frame) cancelAnimationFrame(frame);
    },
  };
}
