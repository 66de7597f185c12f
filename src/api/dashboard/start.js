// Starting a flow: pick a registered workflow, edit its data as JSON
// (checked before it is sent), optionally give it an idempotency key, a
// priority and a timeout, and go to the new flow. A start whose key
// returned a flow started before says so and links to it. The API's
// errors are shown with the JSON path they point at.

import { call, segment } from './client.js';
import { h, replace } from './dom.js';

/** The longest key the server takes, in bytes of UTF-8. */
const MAX_KEY_BYTES = 256;
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i;

/** The reason `key` cannot be a flow's key, or null. */
export function keyProblem(key) {
  if (new TextEncoder().encode(key.trim()).length > MAX_KEY_BYTES) {
    return `A key is at most ${MAX_KEY_BYTES} bytes.`;
  }
  return null;
}

/** The reason `text` is not a timeout, or null (empty: no timeout). The
 * server reads the rest (`30s`, `10m`, `1h 30m`). */
export function timeoutProblem(text) {
  if (text.trim() === '') return null;
  if (!/^\s*[0-9]/.test(text)) return 'A timeout is a duration such as 30s, 10m or 2h.';
  return null;
}

/** The reason `text` is not a JSON object, or null when it is one. */
export function dataProblem(text) {
  if (text.trim() === '') return null; // no data: the workflow's defaults
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return `Not valid JSON: ${error.message}`;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return 'The data must be a JSON object, like {"query": "rust"}.';
  }
  return null;
}

export function mount(main, { query }) {
  let workflows = [];
  let defaults = ''; // the text the selected workflow's defaults gave
  let sending = false;
  let edited = false; // the user typed in the data since it was filled
  let stopped = false;
  let definitionRequest = 0;
  let refused = null; // the field the server's last refusal pointed at

  const heading = h('h1', { tabindex: -1 }, 'Start a flow');
  const select = h('select', { id: 'start-workflow', name: 'workflow', required: true, testid: 'start-workflow' });
  const about = h('p', { class: 'hint', id: 'start-workflow-about', testid: 'start-workflow-about' });
  const data = h('textarea', {
    id: 'start-data',
    name: 'data',
    rows: 10,
    spellcheck: 'false',
    autocomplete: 'off',
    testid: 'start-data',
    'aria-describedby': 'start-data-help start-data-error',
  });
  const dataError = h('p', { class: 'field-error', id: 'start-data-error', testid: 'start-data-error', 'aria-live': 'polite' });
  const key = h('input', {
    id: 'start-key',
    name: 'key',
    type: 'text',
    autocomplete: 'off',
    spellcheck: 'false',
    placeholder: 'order-1042',
    testid: 'start-key',
    'aria-describedby': 'start-key-help start-key-error',
  });
  const keyError = h('p', { class: 'field-error', id: 'start-key-error', testid: 'start-key-error', 'aria-live': 'polite' });
  const priority = h(
    'select',
    { id: 'start-priority', name: 'priority', testid: 'start-priority', 'aria-describedby': 'start-priority-help' },
    Array.from({ length: 10 }, (_, n) => h('option', { value: n }, n === 0 ? '0 (default)' : n === 9 ? '9 (first)' : String(n))),
  );
  const timeout = h('input', {
    id: 'start-timeout',
    name: 'timeout',
    type: 'text',
    autocomplete: 'off',
    spellcheck: 'false',
    placeholder: '10m',
    testid: 'start-timeout',
    'aria-describedby': 'start-timeout-help start-timeout-error',
  });
  const timeoutError = h('p', { class: 'field-error', id: 'start-timeout-error', testid: 'start-timeout-error', 'aria-live': 'polite' });
  const existing = h('div', { class: 'notice', role: 'status', testid: 'start-existing', hidden: true });
  const submit = h('button', { type: 'submit', class: 'primary', testid: 'start-submit' }, 'Start flow');
  const reset = h('button', { type: 'button', class: 'quiet', testid: 'start-reset' }, 'Use the defaults');
  const failure = h('div', { class: 'problem', role: 'alert', testid: 'start-error', hidden: true });
  const form = h(
    'form',
    { class: 'card start-form', testid: 'start-form', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'start-workflow' }, 'Workflow'), select, about),
    h(
      'div',
      { class: 'field' },
      h('label', { for: 'start-data' }, 'Data (JSON)'),
      data,
      h(
        'p',
        { class: 'hint', id: 'start-data-help' },
        "A JSON object, laid over the workflow's default data key by key. Leave it empty to use the defaults.",
      ),
      dataError,
    ),
    h(
      'fieldset',
      { class: 'options' },
      h('legend', {}, 'Options (all optional)'),
      h(
        'div',
        { class: 'field' },
        h('label', { for: 'start-key' }, 'Key'),
        key,
        h(
          'p',
          { class: 'hint', id: 'start-key-help' },
          'An idempotency key: while a flow started with it is kept, starting the same workflow and data with it again returns that flow.',
        ),
        keyError,
      ),
      h(
        'div',
        { class: 'field' },
        h('label', { for: 'start-priority' }, 'Priority'),
        priority,
        h('p', { class: 'hint', id: 'start-priority-help' }, 'Busy workers take the jobs of higher-priority flows first.'),
      ),
      h(
        'div',
        { class: 'field' },
        h('label', { for: 'start-timeout' }, 'Timeout'),
        timeout,
        h(
          'p',
          { class: 'hint', id: 'start-timeout-help' },
          "How long the flow may run, such as 30s, 10m or 2h, instead of the workflow's own; past it, the running phase fails.",
        ),
        timeoutError,
      ),
    ),
    existing,
    failure,
    h('div', { class: 'buttons' }, submit, reset),
  );
  const none = h('p', { class: 'empty', testid: 'start-none', hidden: true });
  main.append(h('div', { class: 'view-head' }, heading), none, form);

  /** Shows `problem` under `field`, or clears it; true when there is none. */
  function mark(field, errorLine, problem) {
    errorLine.textContent = problem ?? '';
    if (problem) field.setAttribute('aria-invalid', 'true');
    else field.removeAttribute('aria-invalid');
    return !problem;
  }

  function validate() {
    const fine = [
      mark(data, dataError, dataProblem(data.value)),
      mark(key, keyError, keyProblem(key.value)),
      mark(timeout, timeoutError, timeoutProblem(timeout.value)),
    ].every(Boolean);
    refused?.setAttribute('aria-invalid', 'true');
    submit.disabled = sending || !fine || !select.value;
    return fine;
  }

  /** The first field that `validate` found wrong. */
  function firstInvalid() {
    return [data, key, timeout].find((field) => field.getAttribute('aria-invalid') === 'true');
  }

  /** Hides what the last start answered, once the form changes. */
  function changed() {
    failure.hidden = true;
    existing.hidden = true;
    refused?.removeAttribute('aria-invalid');
    refused = null;
  }

  /** A start that returned the flow its key started before. */
  function showExisting(id, sentKey) {
    replace(
      existing,
      h(
        'p',
        {},
        'A flow with the key ',
        h('code', {}, sentKey),
        ' was started before with this workflow and data, so no new flow started. ',
        h('a', { href: `#/flows/${encodeURIComponent(id)}`, testid: 'start-existing-link' }, `Open flow ${id}`),
      ),
    );
    existing.hidden = false;
  }

  function describe() {
    const workflow = workflows.find((candidate) => candidate.name === select.value);
    // Starting runs the latest version; a server from before versions
    // names none.
    const version = Number.isInteger(workflow?.version) ? `version ${workflow.version}; ` : '';
    about.textContent = workflow
      ? `${version}${workflow.phases} phase${workflow.phases === 1 ? '' : 's'}; handlers: ${workflow.handlers.join(', ') || 'none'}`
      : '';
  }

  /** Fills the data with the workflow's defaults, unless the user edited it. */
  async function loadDefaults(force) {
    const name = select.value;
    if (!name) return;
    const request = ++definitionRequest;
    try {
      const definition = await call(`/api/workflows/${segment(name)}`);
      if (stopped || request !== definitionRequest) return;
      const text = JSON.stringify(definition?.data ?? {}, null, 2);
      if ((force && !edited) || data.value === defaults || data.value.trim() === '') {
        data.value = text;
        edited = false;
      }
      defaults = text;
      form.dataset.defaultsFor = name;
      validate();
    } catch {
      // The list already said it exists; without defaults `{}` will do.
    }
  }

  function showFailure(error) {
    const lines = [h('p', {}, h('strong', {}, 'The server refused the flow: '), error.message)];
    // The flow that holds the key, when the message names it.
    const holder = error.code === 'key_taken' ? UUID.exec(error.message)?.[0] : null;
    if (holder) {
      lines.push(
        h('p', {}, h('a', { href: `#/flows/${encodeURIComponent(holder.toLowerCase())}`, testid: 'start-error-flow' }, 'Open the flow that holds the key')),
      );
    }
    refused = { '$.key': key, '$.timeout': timeout, '$.priority': priority }[error.path] ?? (error.code === 'key_taken' ? key : null);
    refused?.setAttribute('aria-invalid', 'true');
    if (error.path) lines.push(h('p', {}, 'At ', h('code', { testid: 'start-error-path' }, error.path)));
    if (error.faults.length > 0) {
      lines.push(
        h(
          'ul',
          {},
          error.faults.map((fault) =>
            h('li', {}, h('code', {}, fault.path), ` ${fault.message}`, fault.hint ? ` (${fault.hint})` : ''),
          ),
        ),
      );
    }
    replace(failure, lines);
    failure.hidden = false;
  }

  select.addEventListener('change', () => {
    delete form.dataset.defaultsFor;
    describe();
    changed();
    loadDefaults(false);
    validate();
  });
  data.addEventListener('input', () => {
    edited = true;
    changed();
    validate();
  });
  for (const field of [key, timeout]) {
    field.addEventListener('input', () => {
      changed();
      validate();
    });
  }
  priority.addEventListener('change', () => {
    changed();
    priority.removeAttribute('aria-invalid');
  });
  reset.addEventListener('click', () => {
    data.value = defaults;
    edited = false;
    validate();
    data.focus();
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!validate()) {
      firstInvalid()?.focus();
      return;
    }
    const body = { workflow: select.value };
    if (data.value.trim() !== '') body.data = JSON.parse(data.value);
    const sentKey = key.value.trim();
    if (sentKey !== '') body.key = sentKey;
    if (Number(priority.value) > 0) body.priority = Number(priority.value);
    if (timeout.value.trim() !== '') body.timeout = timeout.value.trim();
    sending = true;
    changed();
    submit.textContent = 'Starting…';
    validate();
    try {
      const created = await call('/api/flows', { method: 'POST', body });
      if (stopped) return;
      // 200 with `created: false`: the key's flow is kept, and it is this one.
      if (created.created === false) showExisting(created.id, sentKey);
      else window.location.hash = `#/flows/${encodeURIComponent(created.id)}`;
    } catch (error) {
      showFailure(error);
    } finally {
      sending = false;
      submit.textContent = 'Start flow';
      if (!stopped) validate();
    }
  });

  document.title = 'Start a flow · distribot';
  validate();
  call('/api/workflows')
    .then((answer) => {
      if (stopped) return;
      workflows = answer?.workflows ?? [];
      if (workflows.length === 0) {
        replace(
          none,
          'No workflow is registered. Register one with ',
          h('code', {}, 'distribot workflows put FILE'),
          ', or serve with ',
          h('code', {}, '--workflows DIR'),
          '.',
        );
        none.hidden = false;
        form.hidden = true;
        return;
      }
      replace(
        select,
        workflows.map((workflow) => h('option', { value: workflow.name }, workflow.name)),
      );
      const wanted = query.get('workflow');
      if (wanted && workflows.some((workflow) => workflow.name === wanted)) select.value = wanted;
      describe();
      validate();
      loadDefaults(true);
    })
    .catch((error) => {
      if (stopped) return;
      replace(failure, `Cannot load the workflows: ${error.message}`);
      failure.hidden = false;
    });

  return {
    unmount() {
      stopped = true;
    },
  };
}
