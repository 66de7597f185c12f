// Starting a flow: pick a registered workflow, edit its data as JSON
// (checked before it is sent), and go to the new flow. The API's errors
// are shown with the JSON path they point at.

import { call, segment } from './client.js';
import { h, replace } from './dom.js';

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
    failure,
    h('div', { class: 'buttons' }, submit, reset),
  );
  const none = h('p', { class: 'empty', testid: 'start-none', hidden: true });
  main.append(h('div', { class: 'view-head' }, heading), none, form);

  function validate() {
    const problem = dataProblem(data.value);
    dataError.textContent = problem ?? '';
    if (problem) data.setAttribute('aria-invalid', 'true');
    else data.removeAttribute('aria-invalid');
    submit.disabled = sending || Boolean(problem) || !select.value;
    return !problem;
  }

  function describe() {
    const workflow = workflows.find((candidate) => candidate.name === select.value);
    about.textContent = workflow
      ? `${workflow.phases} phase${workflow.phases === 1 ? '' : 's'}; handlers: ${workflow.handlers.join(', ') || 'none'}`
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
    failure.hidden = true;
    loadDefaults(false);
    validate();
  });
  data.addEventListener('input', () => {
    edited = true;
    failure.hidden = true;
    validate();
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
      data.focus();
      return;
    }
    const body = { workflow: select.value };
    if (data.value.trim() !== '') body.data = JSON.parse(data.value);
    sending = true;
    submit.textContent = 'Starting…';
    validate();
    try {
      const created = await call('/api/flows', { method: 'POST', body });
      if (!stopped) window.location.hash = `#/flows/${encodeURIComponent(created.id)}`;
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
