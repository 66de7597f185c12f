// Drives the distribot dashboard in Debian's headless Chromium, through the
// page only: clicks and typing, as a person would. Colours are checked as
// the browser computes them, so that a flow that went wrong cannot look
// like a success; one step feeds the page a made-up answer, for the moment
// a handler is being asked for its jobs, which real flows pass too fast.
// The one thing done outside the page is opening the gate a failed flow
// waits for (a file its `Gate` handler looks for), before retrying it.
//
//   node tests/browser/dashboard.mjs BASE_URL SCREENSHOT_DIR
//
// With DASHBOARD_TOKEN set, the server wants that API token, and the run
// checks the token form instead. DASHBOARD_SERVER_PID, when set, is the
// server's process id, which its in-process worker must show.
//
// It saves a screenshot of each view it checks, and a full-page
// `failure-….png` when a step fails, then exits 1. Every wait polls with a
// timeout; none sleeps. tests/dashboard.rs starts the server (with
// tests/browser/fixtures) and runs this.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error('usage: node dashboard.mjs BASE_URL SCREENSHOT_DIR');
  process.exit(2);
}
const token = process.env.DASHBOARD_TOKEN || '';
const serverPid = process.env.DASHBOARD_SERVER_PID || ''; // hosts the in-process worker
const CHROMIUM = process.env.DASHBOARD_CHROMIUM || '/usr/bin/chromium';
const WAIT = 15_000; // the longest any one expectation waits
const FLOW_WAIT = 45_000; // the longest a flow may take to finish
const POLL = 50; // ms between two looks at the page while waiting

// A slow flow: 80 jobs of 100 ms, two at a time, so about 4 s of work:
// time enough to pause or cancel it through the page.
const SLOW = '{\n  "jobs": {"prepare": 2, "work": 80},\n  "sleep_ms": 100\n}';
const QUICK = '{"jobs": {"prepare": 3, "work": 12}, "sleep_ms": 10}';

mkdirSync(shots, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), 'distribot-dashboard-'));
// Holds the gate of the `gated` flows: they fail until the file exists.
const gates = mkdtempSync(join(tmpdir(), 'distribot-gate-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(WAIT);

const problems = [];
page.on('pageerror', (error) => problems.push(`uncaught error in the page: ${error.message}`));
page.on('console', (message) => {
  const text = message.text();
  if (/Content.Security.Policy/i.test(text)) problems.push(`CSP violation: ${text}`);
  else if (message.type() === 'error' && !/the server responded with a status of (400|401|409)/.test(text)) console.log(`  (console) ${text}`);
});

let current = 'start';

async function step(name, body) {
  current = name;
  const started = Date.now();
  await body();
  if (problems.length > 0) throw new Error(problems.join('\n'));
  console.log(`ok - ${name} (${Date.now() - started} ms)`);
}

async function shot(name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

async function finish(code) {
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  rmSync(gates, { recursive: true, force: true });
  process.exit(code);
}

const byId = (id) => page.getByTestId(id);

/** Waits until the element `testid` reads exactly `text`. */
async function expectText(testid, text, timeout = WAIT) {
  const pattern = text instanceof RegExp ? text : new RegExp(`^\\s*${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*$`);
  await page.getByTestId(testid).filter({ hasText: pattern }).first().waitFor({ timeout });
}

/** Waits until each of the buttons is enabled (true) or disabled (false). */
async function expectEnabled(buttons) {
  await page.waitForFunction(
    (wanted) =>
      Object.entries(wanted).every(([testid, enabled]) => {
        const button = document.querySelector(`[data-testid="${testid}"]`);
        return button && button.disabled === !enabled;
      }),
    buttons,
    { timeout: WAIT, polling: POLL },
  );
}

/** Waits until `selector` matches `count` elements. */
async function expectCount(selector, count, timeout = WAIT) {
  await page.waitForFunction(
    ([css, n]) => document.querySelectorAll(css).length === n,
    [selector, count],
    { timeout, polling: POLL },
  );
}

/** The ids of the flows the list shows, top to bottom. */
async function listedIds() {
  return page.locator('[data-testid=flow-row]').evaluateAll((rows) => rows.map((row) => row.dataset.flowId));
}

function same(actual, expected, what) {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, saw ${JSON.stringify(actual)}`);
  }
}

/** Waits until the list shows exactly the flows `ids`, in that order. */
async function expectRows(ids, what) {
  try {
    await page.waitForFunction(
      (wanted) => {
        const rows = document.querySelectorAll('[data-testid=flow-row]');
        return JSON.stringify([...rows].map((row) => row.dataset.flowId)) === JSON.stringify(wanted);
      },
      ids,
      { timeout: WAIT, polling: POLL },
    );
  } catch {
    throw new Error(`${what}: expected ${JSON.stringify(ids)}, saw ${JSON.stringify(await listedIds())}`);
  }
}

/**
 * Waits until the computed `property` (`color`, `backgroundColor`,
 * `stroke`) of the first element matching `selector` is a colour of `kind`:
 * `green`, `red`, `warm` (red to amber), `grey`, or `not-green`. Colours
 * are told apart by hue, so that a change of shade in style.css does not
 * break the test, while a success green where a failure belongs does.
 */
async function expectColour(selector, property, kind, what, timeout = WAIT) {
  const classify = ([css, prop, wanted]) => {
    const element = document.querySelector(css);
    if (!element) return false;
    const value = getComputedStyle(element)[prop];
    // A canvas turns any CSS colour (rgb(), color(srgb …), named) into bytes.
    const paint = document.createElement('canvas').getContext('2d', { willReadFrequently: true });
    paint.fillStyle = '#fff';
    paint.fillRect(0, 0, 1, 1);
    paint.fillStyle = value;
    paint.fillRect(0, 0, 1, 1);
    const [r, g, b] = [...paint.getImageData(0, 0, 1, 1).data].map((byte) => byte / 255);
    const max = Math.max(r, g, b);
    const min = Math.min(r, g, b);
    const light = (max + min) / 2;
    const saturation = max === min ? 0 : (max - min) / (1 - Math.abs(2 * light - 1));
    let hue = 0;
    if (max !== min) {
      if (max === r) hue = (60 * ((g - b) / (max - min)) + 360) % 360;
      else if (max === g) hue = 60 * ((b - r) / (max - min)) + 120;
      else hue = 60 * ((r - g) / (max - min)) + 240;
    }
    const colourful = saturation > 0.25;
    const green = colourful && hue >= 80 && hue <= 170;
    const red = colourful && (hue <= 12 || hue >= 335);
    const warm = colourful && (hue <= 50 || hue >= 335);
    const grey = saturation <= 0.2;
    return { green, red, warm, grey, 'not-green': !green }[wanted];
  };
  try {
    await page.waitForFunction(classify, [selector, property, kind], { timeout, polling: POLL });
  } catch {
    const seen = await page
      .locator(selector)
      .first()
      .evaluate((element, prop) => getComputedStyle(element)[prop], property)
      .catch(() => 'no such element');
    throw new Error(`${what}: expected a ${kind} ${property} on ${selector}, saw ${seen}`);
  }
}

/** Waits until the first element matching `selector` has the class `name`. */
async function expectClass(selector, name, what) {
  try {
    await page.waitForFunction(
      ([css, cls]) => document.querySelector(css)?.classList.contains(cls),
      [selector, name],
      { timeout: WAIT, polling: POLL },
    );
  } catch {
    const seen = await page.locator(selector).first().getAttribute('class').catch(() => 'no such element');
    throw new Error(`${what}: expected class ${name} on ${selector}, saw "${seen}"`);
  }
}

/** Fails if any progress bar on the page says it is enumerating or moves. */
async function expectNoEnumerating(what) {
  const moving = await page.evaluate(() =>
    [...document.querySelectorAll('[role=progressbar]')]
      .filter(
        (bar) =>
          /enumerating/.test(bar.textContent) ||
          bar.classList.contains('pending') ||
          bar.getAnimations({ subtree: true }).some((animation) => !(animation instanceof CSSTransition)),
      )
      .map((bar) => `${bar.getAttribute('aria-label')}: ${bar.textContent}`),
  );
  if (moving.length > 0) throw new Error(`${what}: bars still enumerating: ${moving.join('; ')}`);
}

/** Fails if any table cell's right edge lies beyond its card's. */
async function expectCellsInside(what) {
  const outside = await page.evaluate(() =>
    [...document.querySelectorAll('main td, main th')]
      .filter((cell) => cell.getClientRects().length > 0)
      .map((cell) => {
        const card = cell.closest('.card, .table-wrap');
        if (!card) return null;
        const edge = cell.getBoundingClientRect().right;
        const limit = card.getBoundingClientRect().right;
        return edge > limit + 0.5 ? `"${cell.textContent.trim()}" ends at ${edge.toFixed(1)}, its card at ${limit.toFixed(1)}` : null;
      })
      .filter(Boolean),
  );
  if (outside.length > 0) throw new Error(`${what}: cells outside their card: ${outside.join('; ')}`);
}

/**
 * Fills the start form: `workflow`, its `data` as text, and the options
 * `key`, `priority` and `timeout` (left as they are when not given).
 */
async function fillStart(workflow, data, options = {}) {
  await byId('nav-start').click();
  await byId('start-workflow').selectOption(workflow);
  // The form fills in the workflow's defaults; wait for them, then type.
  await page.locator(`[data-testid=start-form][data-defaults-for="${workflow}"]`).waitFor();
  await byId('start-data').fill(data);
  if (options.key !== undefined) await byId('start-key').fill(options.key);
  if (options.priority !== undefined) await byId('start-priority').selectOption(String(options.priority));
  if (options.timeout !== undefined) await byId('start-timeout').fill(options.timeout);
}

/** Starts a flow of `workflow` from the start form and answers its id. */
async function startFlow(workflow, data, options) {
  await fillStart(workflow, data, options);
  await byId('start-submit').click();
  await page.waitForURL(/#\/flows\/[^/]+$/);
  const id = decodeURIComponent(new URL(page.url()).hash.replace('#/flows/', ''));
  await expectText('flow-id', id);
  return id;
}

async function expectFinished() {
  await expectText('flow-status', 'finished', FLOW_WAIT);
  await page.locator('[data-testid=flow-progress][aria-valuenow="100"]').waitFor();
  await page
    .locator('[data-testid=visit][data-phase=work] [data-testid=visit-progress][aria-valuenow="100"]')
    .waitFor();
  await page.locator('[data-testid=graph-node][data-phase=finished][data-current=true]').waitFor();
  await expectText('flow-phase', 'finished');
  await expectEnabled({ 'action-pause': false, 'action-resume': false, 'action-cancel': false });
  await expectHidden('action-retry', 'a flow that ended well');
}

/** Fails unless the element `testid` is hidden (or absent). */
async function expectHidden(testid, what) {
  try {
    await byId(testid).waitFor({ state: 'hidden' });
  } catch {
    throw new Error(`${what}: ${testid} is shown`);
  }
}

/**
 * The timeline as `[kind, what, time]`, top to bottom: `visit` entries
 * with their phase, `command` entries with their command.
 */
async function timelineEntries() {
  return page.locator('[data-testid=timeline] > li').evaluateAll((items) =>
    items.map((item) =>
      item.dataset.testid === 'timeline-command'
        ? ['command', item.dataset.command, item.querySelector('time').getAttribute('datetime')]
        : ['visit', item.dataset.phase, item.querySelector('time').getAttribute('datetime')],
    ),
  );
}

async function openScenarios() {
  const flows = {};

  await step('the empty list loads, live', async () => {
    await page.goto(`${base}/`);
    await byId('list-empty').waitFor();
    await expectText('list-empty', /No flows yet/);
    await page.locator('[data-testid=live-status][data-state=live]').waitFor();
    await shot('list-empty');
  });

  await step('the start form checks the data before sending it', async () => {
    await byId('nav-start').click();
    await byId('start-workflow').selectOption('demo');
    await page.locator('[data-testid=start-form][data-defaults-for=demo]').waitFor();
    same(JSON.parse(await byId('start-data').inputValue()).sleep_ms, 20, "the workflow's default data");
    // A start runs the latest version, which the form names.
    await expectText('start-workflow-about', /^\s*version 1; \d+ phases; handlers: /);
    await byId('start-data').fill('{"jobs": ');
    await expectText('start-data-error', /Not valid JSON/);
    await expectEnabled({ 'start-submit': false });
    await byId('start-data').fill('[1, 2]');
    await expectText('start-data-error', /must be a JSON object/);
    await shot('start-invalid');
    // What only the server can refuse comes back with its message and path.
    await byId('start-data').fill('{"note": "\\u0000"}');
    await byId('start-submit').click();
    await expectText('start-error', /NUL/);
    await expectText('start-error-path', '$.data.note');
    await shot('start-refused');
    await byId('start-reset').click();
    await page.waitForFunction(() => document.querySelector('[data-testid=start-data-error]').textContent === '');
    await expectEnabled({ 'start-submit': true });
  });

  await step('(1) a flow started from the form reaches 100% and finishes', async () => {
    flows.first = await startFlow('demo', QUICK);
    // The registered version the flow started with, which it keeps.
    await expectText('flow-workflow-version', '1');
    await expectFinished();
    await expectCount('[data-testid=timeline-entry]', 4);
    await page.locator('[data-testid=handler-total][data-handler=Work]', { hasText: '12 / 12' }).waitFor();
    await page.locator('[data-testid=graph-error-edge]').first().waitFor();
    // A success, and only a success, is green.
    await expectClass('[data-testid=flow-status]', 'status-succeeded', 'the badge of a flow that ended well');
    await expectColour('[data-testid=flow-status]', 'color', 'green', 'the badge of a flow that ended well');
    await expectColour('[data-testid=flow-progress] .bar-fill', 'backgroundColor', 'green', 'the bar of a flow that ended well');
    await expectNoEnumerating('a finished flow');
    await shot('detail-finished');
  });

  await step('(2) a slow flow is paused, resumed, and finishes', async () => {
    flows.paused = await startFlow('demo', SLOW);
    await expectText('flow-status', 'running');
    await expectEnabled({ 'action-pause': true, 'action-resume': false, 'action-cancel': true });
    await byId('action-pause').click();
    await expectText('flow-status', 'paused');
    await expectText('action-message', 'Paused.');
    await expectEnabled({ 'action-pause': false, 'action-resume': true, 'action-cancel': true });
    await expectHidden('action-retry', 'a paused flow');
    // The pause is in the timeline at once, with who asked.
    await page.locator('[data-testid=timeline-command][data-command=pause][data-by=api]', { hasText: /paused by api/ }).waitFor();
    await expectClass('[data-testid=flow-status]', 'status-paused', 'the badge of a paused flow');
    await expectColour('[data-testid=flow-status]', 'color', 'warm', 'the badge of a paused flow');
    await expectColour('[data-testid=flow-progress] .bar-fill', 'backgroundColor', 'warm', 'the bar of a paused flow');
    await expectNoEnumerating('a paused flow');
    await shot('detail-paused');

    // While it is paused, the list's status filter finds it, and only it.
    await byId('back-to-list').click();
    await byId('filter-status').selectOption('paused');
    await expectRows([flows.paused], 'the paused flows');
    await page.locator('[data-testid=flow-row] [data-testid=flow-row-status]', { hasText: 'paused' }).waitFor();
    await expectClass('[data-testid=flow-row-status]', 'status-paused', 'the list badge of a paused flow');
    await expectColour('[data-testid=flow-row-progress] .bar-fill', 'backgroundColor', 'warm', 'the list bar of a paused flow');
    await expectNoEnumerating('the list with a paused flow');
    await page.goBack(); // the filter change
    await page.goBack(); // the list
    await expectText('flow-id', flows.paused);

    await byId('action-resume').click();
    await expectText('action-message', 'Resumed.');
    await page.locator('[data-testid=timeline-command][data-command=resume][data-by=api]', { hasText: /resumed by api/ }).waitFor();
    await expectFinished();
    // Commands sit among the visits by time, not after them all: the
    // flow finished after the resume.
    await expectCount('[data-testid=timeline-command]', 2);
    const entries = await timelineEntries();
    const times = entries.map(([, , at]) => Date.parse(at));
    if (times.some((at, index) => index > 0 && at < times[index - 1])) {
      throw new Error(`the timeline is not in time order: ${JSON.stringify(entries)}`);
    }
    const kinds = entries.map(([kind, what]) => `${kind}:${what}`);
    const paused = kinds.indexOf('command:pause');
    const resumed = kinds.indexOf('command:resume');
    if (paused < 1 || resumed < paused || kinds[kinds.length - 1] !== 'visit:finished') {
      throw new Error(`the commands are not among the visits: ${kinds.join(', ')}`);
    }
    await shot('detail-commands');
  });

  await step('(3) a slow flow is canceled', async () => {
    flows.canceled = await startFlow('demo', SLOW);
    await expectText('flow-status', 'running');
    // A second tab on the same flow whose event stream never gets through,
    // so that it does not hear of the cancel below.
    const behind = await context.newPage();
    behind.setDefaultTimeout(WAIT);
    await behind.route('**/api/flows/*/events', (route) => route.abort());
    await behind.goto(`${base}/#/flows/${encodeURIComponent(flows.canceled)}`);
    await behind.getByTestId('flow-status').filter({ hasText: /^running$/ }).waitFor();
    await page.bringToFront();

    await byId('action-cancel').click();
    await byId('cancel-confirm').waitFor();
    await byId('action-cancel-keep').click();
    await byId('cancel-confirm').waitFor({ state: 'hidden' });
    await expectText('flow-status', 'running');
    await byId('action-cancel').click();
    await byId('action-cancel-confirm').click();
    await expectText('flow-status', 'canceled');
    await expectText('action-message', 'Canceled.');
    await expectEnabled({ 'action-pause': false, 'action-resume': false, 'action-cancel': false });
    await expectHidden('action-retry', 'a canceled flow');
    await page.locator('[data-testid=timeline-command][data-command=cancel]', { hasText: /canceled by api/ }).waitFor();
    await expectClass('[data-testid=flow-status]', 'status-canceled', 'the badge of a canceled flow');
    await expectColour('[data-testid=flow-status]', 'color', 'grey', 'the badge of a canceled flow');
    await expectColour('[data-testid=flow-progress] .bar-fill', 'backgroundColor', 'grey', 'the bar of a canceled flow');
    await expectNoEnumerating('a canceled flow');
    await shot('detail-canceled');

    // The tab that missed it still offers pause; the server refuses (409),
    // the page says why and catches up.
    await behind.bringToFront();
    await behind.getByTestId('action-pause').click();
    await behind
      .getByTestId('action-error')
      .filter({ hasText: /Could not pause the flow: .*cannot pause a flow that is canceled/ })
      .waitFor();
    await behind.getByTestId('flow-status').filter({ hasText: /^canceled$/ }).waitFor();
    await behind.screenshot({ path: join(shots, 'detail-refused.png'), fullPage: true });
    await behind.close();
    await page.bringToFront();
  });

  await step('(4) the workers view shows the in-process worker', async () => {
    await byId('nav-workers').click();
    await byId('worker-row').first().waitFor();
    const handlers = await byId('worker-handlers').first().innerText();
    for (const hosted of ['Notify@1.0.0', 'Prepare@1.0.0', 'Work@1.2.0']) {
      if (!handlers.includes(hosted)) throw new Error(`the worker does not show ${hosted}: ${handlers}`);
    }
    await expectText('worker-last-seen', /^\d+s ago$/);
    if (serverPid) await expectText('worker-pid', serverPid);
    await shot('workers');
  });

  await step('(5) the list shows the flows, newest first, and filters by status and workflow', async () => {
    await byId('nav-flows').click();
    await expectRows([flows.canceled, flows.paused, flows.first], 'every flow');
    await expectText('counts', /^3 flows in all: 2 finished · 1 canceled$/);
    await shot('list');

    await byId('filter-status').selectOption('finished');
    await expectRows([flows.paused, flows.first], 'the finished flows');
    await byId('filter-status').selectOption('canceled');
    await expectRows([flows.canceled], 'the canceled flows');
    await byId('filter-status').selectOption('running');
    await byId('list-empty').waitFor();
    await expectText('list-empty', /No flow matches these filters/);
    await shot('list-filtered-empty');

    // The filters live in the URL: a reload keeps them.
    await byId('filter-status').selectOption('finished');
    await expectRows([flows.paused, flows.first], 'the finished flows');
    await page.reload();
    await expectRows([flows.paused, flows.first], 'the finished flows after a reload');
    same(await byId('filter-status').inputValue(), 'finished', 'the status filter after a reload');

    await byId('filter-clear').click();
    await expectRows([flows.canceled, flows.paused, flows.first], 'every flow');
    await byId('filter-workflow').selectOption('tiny');
    await byId('list-empty').waitFor();
    await byId('filter-workflow').selectOption('demo');
    await expectRows([flows.canceled, flows.paused, flows.first], 'the demo flows');

    // Pages, two flows at a time.
    await page.goto(`${base}/#/?limit=2`);
    await expectRows([flows.canceled, flows.paused], 'the first page');
    await byId('page-older').click();
    await expectRows([flows.first], 'the second page');
    await expectEnabled({ 'page-older': false, 'page-newer': true });
    await byId('page-newer').click();
    await expectRows([flows.canceled, flows.paused], 'the first page again');

    // A row opens its flow; back returns to the list.
    await page.locator(`[data-testid=flow-row][data-flow-id="${flows.paused}"] td`).nth(1).click();
    await expectText('flow-id', flows.paused);
    await expectText('flow-status', 'finished');
    await page.goBack();
    await expectRows([flows.canceled, flows.paused], 'the first page after going back');
  });

  await step('a failing flow shows its error and its error transition', async () => {
    flows.failing = await startFlow('fragile', '{}');
    // Its status is `finished`, but it got there through an error: not green.
    await expectText('flow-status', 'finished after error', FLOW_WAIT);
    await expectClass('[data-testid=flow-status]', 'status-failed', 'the badge of a flow finished after an error');
    await expectColour('[data-testid=flow-status]', 'color', 'red', 'the badge of a flow finished after an error');
    await expectColour('[data-testid=flow-progress] .bar-fill', 'backgroundColor', 'red', 'the bar of a flow finished after an error');
    await expectColour(
      '[data-testid=graph-node][data-current=true] .box',
      'stroke',
      'red',
      'the current phase of a flow finished after an error',
    );
    // The failed visit is red, its error beside it.
    const attempt = '[data-testid=timeline-entry][data-phase=attempt]';
    await expectColour(`${attempt} [data-testid=visit-progress]`, 'backgroundColor', 'red', 'the failed visit');
    await expectText('visit-error', /Flaky.*failed on purpose/);
    await page.locator(`${attempt} [data-testid=visit-error]`).waitFor();
    // The visit of the error phase completed, on the error path: not green.
    await expectColour(
      '[data-testid=visit][data-phase=recover] [data-testid=visit-progress] .bar-fill',
      'backgroundColor',
      'warm',
      'the visit of the error phase',
    );
    await expectNoEnumerating('a flow finished after an error');
    await byId('flow-error').waitFor();
    await expectText('flow-error-message', /failed on purpose/);
    await expectText('flow-outcome', 'did not end well');
    // Finished after an error: it can be retried, from the phase that failed.
    await byId('action-retry').waitFor();
    await expectEnabled({ 'action-retry': true, 'action-retry-scratch': true, 'action-pause': false, 'action-cancel': false });
    await page.locator('[data-testid=timeline-entry].step-error[data-phase=recover]').waitFor();
    await page.locator('[data-testid=graph-node][data-phase=recover][data-current=true]').waitFor();
    await page.locator('[data-testid=handler-total][data-handler=Flaky] td', { hasText: /^1$/ }).first().waitFor();
    await shot('detail-error');
  });

  await step('a live list picks up a flow started elsewhere', async () => {
    await page.goto(`${base}/#/`);
    const before = [flows.failing, flows.canceled, flows.paused, flows.first];
    await expectRows(before, 'every flow');
    // A second page starts a flow; the first one's list shows it unasked.
    const other = await context.newPage();
    await other.goto(`${base}/#/start?workflow=tiny`);
    await other.locator('[data-testid=start-form][data-defaults-for=tiny]').waitFor();
    await other.getByTestId('start-submit').click();
    await other.waitForURL(/#\/flows\/[^/]+$/);
    const id = decodeURIComponent(new URL(other.url()).hash.replace('#/flows/', ''));
    await other.close();
    await expectRows([id, ...before], 'every flow with the new one');
    await page.locator(`[data-testid=flow-row][data-flow-id="${id}"][data-status=finished]`).waitFor({ timeout: FLOW_WAIT });
  });

  await step('a flow that fails with no error phase to go to is failed, in red', async () => {
    flows.doomed = await startFlow('doomed', '{}');
    await expectText('flow-status', 'failed', FLOW_WAIT);
    await expectClass('[data-testid=flow-status]', 'status-failed', 'the badge of a failed flow');
    await expectColour('[data-testid=flow-status]', 'color', 'red', 'the badge of a failed flow');
    await expectColour('[data-testid=flow-progress] .bar-fill', 'backgroundColor', 'red', 'the bar of a failed flow');
    await expectColour('[data-testid=graph-node][data-current=true] .box', 'stroke', 'red', 'the phase the flow failed in');
    const attempt = '[data-testid=timeline-entry][data-phase=attempt]';
    await expectColour(`${attempt} [data-testid=visit-progress]`, 'backgroundColor', 'red', 'the failed visit');
    await page.locator(`${attempt} [data-testid=visit-error]`, { hasText: /failed on purpose/ }).waitFor();
    await expectNoEnumerating('a failed flow');
    await shot('detail-failed');
  });

  await step('a flow waiting for a worker on its error path says so, paused says paused, and nothing animates', async () => {
    // `fetch` waits for a worker nobody runs until its timeout fails it;
    // the error phase `recover` then waits for one too.
    flows.lapsed = await startFlow('lapsed', '{}');
    await expectText('flow-status', 'running on error path', FLOW_WAIT);
    await expectClass('[data-testid=flow-status]', 'error-path', 'the badge of a flow on its error path');
    await expectColour('[data-testid=flow-status]', 'color', 'warm', 'the badge of a flow on its error path');
    await expectColour('[data-testid=flow-progress] .bar-fill', 'backgroundColor', 'warm', 'the bar of a flow on its error path');
    await expectText('flow-waiting', /waiting for a worker: Offline/);

    // The visit the timeout failed had no jobs: it is failed, not "no jobs".
    const fetch = '[data-testid=timeline-entry][data-phase=fetch]';
    await page.locator(`${fetch} [data-testid=visit-progress]`, { hasText: /^\s*failed\s*$/ }).waitFor();
    await expectColour(`${fetch} [data-testid=visit-progress]`, 'backgroundColor', 'red', 'the visit a timeout failed');
    await page.locator(`${fetch} [data-testid=visit-error]`, { hasText: /did not complete within 300ms/ }).waitFor();
    // The error phase waits for a worker rather than enumerating.
    const recover = '[data-testid=visit][data-phase=recover]';
    await page.locator(`${recover} [data-testid=visit-progress]`, { hasText: /waiting/ }).waitFor();
    await page.locator(`${recover} [data-testid=handler-progress]`, { hasText: /waiting/ }).waitFor();
    await expectNoEnumerating('a flow waiting for a worker');
    await shot('detail-waiting-error-path');

    await byId('action-pause').click();
    await expectText('flow-status', 'paused on error path');
    await expectClass('[data-testid=flow-status]', 'status-paused', 'the badge of a paused flow on its error path');
    await page.locator(`${recover} [data-testid=visit-progress]`, { hasText: /^\s*paused\s*$/ }).waitFor();
    await expectNoEnumerating('a paused flow on its error path');
    await shot('detail-paused-error-path');

    // In the list, the same.
    await byId('back-to-list').click();
    const row = `[data-testid=flow-row][data-flow-id="${flows.lapsed}"]`;
    await page.locator(`${row} [data-testid=flow-row-status]`, { hasText: 'paused on error path' }).waitFor();
    await page.locator(`${row} [data-testid=flow-row-progress]`, { hasText: /^\s*paused\s*$/ }).waitFor();
    await expectNoEnumerating('the list with a paused flow');
    await page.goBack();
    await expectText('flow-id', flows.lapsed);

    await byId('action-cancel').click();
    await byId('action-cancel-confirm').click();
    await expectText('flow-status', 'canceled');
    await expectColour('[data-testid=flow-status]', 'color', 'grey', 'the badge of a canceled flow');
    await page.locator(`${recover} [data-testid=visit-progress]`, { hasText: /^\s*canceled\s*$/ }).waitFor();
    if (await byId('flow-waiting').isVisible()) throw new Error('a canceled flow still says it waits for a worker');
    await expectNoEnumerating('a canceled flow');
  });

  await step('the list colours each flow by its outcome, not its status', async () => {
    await page.goto(`${base}/#/`);
    const row = (id) => `[data-testid=flow-row][data-flow-id="${id}"]`;
    await page.locator(row(flows.lapsed)).waitFor();
    const expected = [
      // The first flow ended in a phase without handlers: no bar to colour.
      [flows.first, 'finished', 'status-succeeded', 'green', null],
      [flows.failing, 'finished after error', 'status-failed', 'red', 'red'],
      [flows.doomed, 'failed', 'status-failed', 'red', 'red'],
      [flows.canceled, 'canceled', 'status-canceled', 'grey', 'grey'],
    ];
    for (const [id, text, cls, badge, fill] of expected) {
      const status = `${row(id)} [data-testid=flow-row-status]`;
      await page.locator(status, { hasText: new RegExp(`^\\s*${text}\\s*$`) }).waitFor();
      await expectClass(status, cls, `the list badge of ${text}`);
      await expectColour(status, 'color', badge, `the list badge of ${text}`);
      if (fill) await expectColour(`${row(id)} [data-testid=flow-row-progress] .bar-fill`, 'backgroundColor', fill, `the list bar of ${text}`);
    }
    await expectNoEnumerating('the list');
    await shot('list-outcomes');
  });

  await step('"enumerating…" moves only while a running visit waits for its handler to enumerate', async () => {
    // The server never shows this for long, so the page gets a made-up
    // answer: the failed flow as it was before its handler enumerated.
    const real = await (await page.request.get(`${base}/api/flows/${encodeURIComponent(flows.doomed)}`)).json();
    const visit = real.phases[real.phases.length - 1];
    const before = {
      ...real,
      status: 'running',
      outcome: 'running',
      ended_at: null,
      ended_well: false,
      error: null,
      handlers: {},
      waiting: [],
      phases: [
        ...real.phases.slice(0, -1),
        {
          ...visit,
          state: 'running',
          finished_at: null,
          error: undefined,
          handlers: visit.handlers.map((handler) => ({
            ...handler,
            enumerated: false,
            total: 0,
            done: 0,
            failed: 0,
            retried: 0,
            started_at: null,
            finished_at: null,
          })),
        },
      ],
    };
    let answer = before;
    const detail = `**/api/flows/${encodeURIComponent(flows.doomed)}`;
    await page.route(detail, (route) => route.fulfill({ json: answer }));
    // Streams that end at once, telling nothing: real events would tell
    // the page how the flow really ended.
    await page.route(`${detail}/events`, (route) => route.fulfill({ status: 200, contentType: 'text/event-stream', body: '' }));
    try {
      await page.goto(`${base}/#/flows/${encodeURIComponent(flows.doomed)}`);
      const bar = '[data-testid=visit][data-phase=attempt] [data-testid=visit-progress]';
      await page.locator(bar, { hasText: 'enumerating…' }).waitFor();
      const moves = await page.locator(bar).evaluate((element) => element.getAnimations().length > 0);
      if (!moves && !(await page.evaluate(() => matchMedia('(prefers-reduced-motion: reduce)').matches))) {
        throw new Error('an enumerating bar does not move');
      }
      // The same visit waiting for a worker says so, and stands still.
      answer = { ...before, waiting: ['waiting for a worker: Flaky'] };
      await page.reload();
      await page.locator(bar, { hasText: /waiting/ }).waitFor();
      await expectText('flow-waiting', 'waiting for a worker: Flaky');
      await expectNoEnumerating('a visit waiting for a worker');
    } finally {
      await page.unroute(`${detail}/events`);
      await page.unroute(detail);
    }
  });

  await step('at 1400 px wide, every table cell stays inside its card', async () => {
    await page.setViewportSize({ width: 1400, height: 900 });
    try {
      flows.wide = await startFlow('wide', '{}');
      await expectText('flow-status', 'finished', FLOW_WAIT);
      await page.locator('[data-testid=handler-total][data-handler=ThumbnailRenderer]', { hasText: /1.?200 \/ 1.?200/ }).waitFor();
      await expectCellsInside('a flow with a long handler name and many jobs');
      await shot('detail-wide-1400');
      for (const id of [flows.failing, flows.lapsed]) {
        await page.goto(`${base}/#/flows/${encodeURIComponent(id)}`);
        await expectText('flow-id', id);
        await byId('visit-handler').first().waitFor();
        await expectCellsInside(`flow ${id}`);
      }
      await page.goto(`${base}/#/`);
      await page.locator(`[data-testid=flow-row][data-flow-id="${flows.wide}"]`).waitFor();
      await expectCellsInside('the list');
      await shot('list-1400');
    } finally {
      await page.setViewportSize({ width: 1280, height: 900 });
    }
  });

  await step('a parent and its child flows link to each other', async () => {
    const parent = await startFlow('family', '{"items": ["a", "b", "c"]}');
    await expectText('flow-status', 'finished', FLOW_WAIT);
    const children = page.locator('[data-testid=flow-children] li a');
    await expectCount('[data-testid=flow-children] li a', 3);
    const first = await children.first().textContent();
    await children.first().click();
    await expectText('flow-id', first.trim());
    await page.locator('[data-testid=flow-parent] a', { hasText: parent }).waitFor();
    await shot('detail-child');
    await page.locator('[data-testid=flow-parent] a').click();
    await expectText('flow-id', parent);
  });

  // A `gated` flow fails while its gate (a file) is closed.
  const gate = join(gates, 'open');
  const gatedData = JSON.stringify({ gate });
  const KEY = 'order-1042';

  await step('a flow started with a key, a priority and a timeout shows them', async () => {
    const started = Date.now();
    flows.gated = await startFlow('gated', gatedData, { key: KEY, priority: 7, timeout: '10m' });
    await expectText('flow-key', KEY);
    await expectText('flow-priority', 'P7');
    // The deadline is the start plus the timeout.
    await byId('flow-deadline').waitFor();
    const deadline = Date.parse(await page.locator('[data-testid=flow-deadline] time').getAttribute('datetime'));
    const offset = deadline - started;
    if (offset < 9.9 * 60_000 || offset > 10 * 60_000 + 30_000) {
      throw new Error(`the deadline is ${offset} ms after the start, not 10 minutes`);
    }
    await expectText('flow-status', 'failed', FLOW_WAIT);
    await page.locator('[data-testid=timeline-entry][data-phase=open] [data-testid=visit-error]', { hasText: /gate .* is closed/ }).waitFor();
    await shot('detail-key-priority');

    // In the list: a priority marker and the key, for this flow only.
    await byId('nav-flows').click();
    const row = (id) => `[data-testid=flow-row][data-flow-id="${id}"]`;
    await page.locator(`${row(flows.gated)} [data-testid=flow-row-priority]`, { hasText: /^\s*P7\s*$/ }).waitFor();
    await page.locator(`${row(flows.gated)} [data-testid=flow-row-key]`, { hasText: new RegExp(`^\\s*${KEY}\\s*$`) }).waitFor();
    await page.locator(row(flows.first)).waitFor();
    await page.locator(`${row(flows.first)} [data-testid=flow-row-version]`, { hasText: /^\s*v1\s*$/ }).waitFor();
    same(await page.locator(`${row(flows.first)} [data-testid=flow-row-priority], ${row(flows.first)} [data-testid=flow-row-key]`).count(), 0, 'markers on a flow started without options');
    await expectCellsInside('the list with a key');
    await shot('list-key-priority');
  });

  await step('the start form checks its options, and a known key returns the flow it started', async () => {
    // A timeout the page can tell is wrong is not sent; one only the
    // server refuses comes back with its path.
    await fillStart('gated', gatedData, { key: '', timeout: 'soon' });
    await expectText('start-timeout-error', /duration such as/);
    await expectEnabled({ 'start-submit': false });
    await byId('start-timeout').fill('0s');
    await byId('start-submit').click();
    await expectText('start-error', /timeout/);
    await expectText('start-error-path', '$.timeout');
    same(await byId('start-timeout').getAttribute('aria-invalid'), 'true', 'the refused timeout field');

    // The same key, workflow and data: the flow started before, and no new one.
    await byId('start-timeout').fill('');
    await byId('start-key').fill(KEY);
    await byId('start-priority').selectOption('7');
    await byId('start-submit').click();
    await expectText('start-existing', /was started before with this workflow and data, so no new flow started/);
    same(await byId('start-existing-link').getAttribute('href'), `#/flows/${flows.gated}`, 'the link to the flow the key started');
    if (!/#\/start/.test(page.url())) throw new Error(`the page left the form: ${page.url()}`);
    await shot('start-existing');
    await byId('start-existing-link').click();
    await expectText('flow-id', flows.gated);

    // The same key with other data is refused, and names the flow that holds it.
    await fillStart('gated', JSON.stringify({ gate, other: true }), { key: KEY });
    await byId('start-submit').click();
    await expectText('start-error', /belongs to flow/);
    same(await byId('start-error-flow').getAttribute('href'), `#/flows/${flows.gated}`, 'the link to the flow that holds the key');
    same(await byId('start-key').getAttribute('aria-invalid'), 'true', 'the key field after key_taken');
    await shot('start-key-taken');
    // None of these starts made a flow: the one started with the key is
    // still the only `gated` flow.
    await page.goto(`${base}/#/?workflow=gated`);
    await expectRows([flows.gated], 'the gated flows');
  });

  await step('a failed flow is retried from the page: from scratch, then from where it failed', async () => {
    await page.goto(`${base}/#/flows/${encodeURIComponent(flows.gated)}`);
    await expectText('flow-status', 'failed');
    await expectEnabled({ 'action-retry': true, 'action-retry-scratch': true, 'action-pause': false, 'action-resume': false, 'action-cancel': false });
    const open = '[data-testid=timeline-entry][data-phase=open]';
    await expectCount(open, 1);

    // With the gate still closed, a retry from scratch runs and fails again.
    await byId('action-retry-scratch').click();
    await expectText('action-message', 'Retried from scratch: the flow went back to open.');
    await expectCount(open, 2);
    await page.locator(`${open}[data-retried-by=api] [data-testid=timeline-retried]`, { hasText: /^\s*retried by api\s*$/ }).waitFor();
    await page.locator(`${open}[data-retried-by=api].step-failed`).waitFor({ timeout: FLOW_WAIT });
    await expectText('flow-status', 'failed');
    await byId('action-retry').waitFor();
    await expectColour('[data-testid=flow-status]', 'color', 'red', 'the badge of a flow that failed again');

    // A second tab on the failed flow: an ended flow's page does not
    // follow it, so it will not hear of the retry below.
    const behind = await context.newPage();
    behind.setDefaultTimeout(WAIT);
    await behind.goto(`${base}/#/flows/${encodeURIComponent(flows.gated)}`);
    await behind.getByTestId('action-retry').waitFor();
    await page.bringToFront();

    // The gate opens; a retry from where it failed then gets through.
    writeFileSync(gate, '');
    await byId('action-retry').click();
    await expectText('action-message', 'Retried: the flow went back to open.');
    await expectText('flow-status', 'finished', FLOW_WAIT);
    await expectText('flow-outcome', 'ended well');
    await expectClass('[data-testid=flow-status]', 'status-succeeded', 'the badge of a flow a retry finished');
    await expectColour('[data-testid=flow-status]', 'color', 'green', 'the badge of a flow a retry finished');
    await expectCount(`${open}[data-retried-by=api]`, 2);
    // The visits the retries ran again count once: the flow did all its jobs.
    await page.locator('[data-testid=flow-progress][aria-valuenow="100"]').waitFor();
    await expectColour('[data-testid=flow-progress] .bar-fill', 'backgroundColor', 'green', 'the bar of a flow a retry finished');
    await page.locator('[data-testid=timeline-entry][data-phase=done]').waitFor();
    await expectHidden('action-retry', 'a flow a retry finished');
    await expectHidden('flow-error', 'a flow a retry finished');
    // The phase that failed before is no longer outlined as failed.
    await page.locator('[data-testid=graph-node][data-phase=open]:not(.failed)').waitFor();
    await expectNoEnumerating('a flow a retry finished');
    await shot('detail-retried');

    // The tab that missed it still offers a retry; the server refuses (409),
    // the page says why and catches up.
    await behind.bringToFront();
    await behind.getByTestId('action-retry').click();
    await behind
      .getByTestId('action-error')
      .filter({ hasText: /Could not retry the flow: cannot retry a flow that is finished/ })
      .waitFor();
    same(await behind.getByTestId('action-error').getAttribute('data-code'), 'wrong_state', 'the code of the refusal');
    await behind.getByTestId('flow-status').filter({ hasText: /^\s*finished\s*$/ }).waitFor();
    await behind.getByTestId('action-retry').waitFor({ state: 'hidden' });
    await behind.screenshot({ path: join(shots, 'detail-retry-refused.png'), fullPage: true });
    await behind.close();
    await page.bringToFront();
  });

  await step('a flow held back by a concurrency limit shows the wait, in the flow and the list', async () => {
    // One slot of `Work` across the workers, three jobs of a second each.
    flows.throttled = await startFlow('throttled', '{"jobs": {"crawl": 3}, "sleep_ms": 1000}');
    const note = '[data-testid=flow-waiting-note][data-kind=slot]';
    await page.locator(note, { hasText: /^\s*waiting for a slot: Work 1\/1\s*$/ }).waitFor({ timeout: FLOW_WAIT });
    await expectColour(note, 'color', 'warm', 'the badge of a wait for a slot');
    await shot('detail-waiting-slot');
    await byId('nav-flows').click();
    const row = `[data-testid=flow-row][data-flow-id="${flows.throttled}"]`;
    await page.locator(`${row} [data-testid=flow-row-waiting][data-kind=slot]`, { hasText: 'waiting for a slot: Work 1/1' }).waitFor();
    await shot('list-waiting-slot');
    // Once the last job has its slot, nothing is waited for.
    await page.locator(`${row}[data-status=finished]`).waitFor({ timeout: FLOW_WAIT });
    same(await page.locator(`${row} [data-testid=flow-row-waiting]`).count(), 0, 'waiting notes of a finished flow');
  });

  await step('branches are drawn with their conditions, and a flow takes the one that holds', async () => {
    const id = await startFlow('branching', '{"mode": "skip"}');
    await expectText('flow-phase', 'skipped', FLOW_WAIT);
    await page.locator('[data-testid=graph-node][data-phase=skipped][data-current=true]').waitFor();
    // Three branches and the error transition.
    await expectCount('[data-testid=graph-edge]', 3);
    await expectCount('[data-testid=graph-error-edge]', 1);
    const titles = await page.$$eval('[data-testid=graph-edge] title', (all) => all.map((t) => t.textContent));
    if (!titles.some((t) => t.includes('check → skipped when {"path":"/data/mode","equals":"skip"}'))) {
      throw new Error(`no edge says its condition: ${JSON.stringify(titles)}`);
    }
    if (!titles.some((t) => t.includes('check → check when else'))) {
      throw new Error(`no loop back for the default branch: ${JSON.stringify(titles)}`);
    }
    flows.branching = id;
    await shot('detail-branching');
  });

  await step('a flow waiting for a signal says so, and the signal is sent from its page', async () => {
    const id = await startFlow('approval', '{}');
    await page
      .locator('[data-testid=flow-waiting-note]', { hasText: 'waiting for the signal `approval`' })
      .waitFor({ timeout: FLOW_WAIT });
    await byId('signal-form').waitFor();
    await expectText('signal-name', 'approval');
    await byId('signal-data').fill('{"ok": tru');
    await byId('signal-send').click();
    await expectText('action-error', /not valid JSON/);
    await byId('signal-data').fill('{"ok": true, "by": "ana"}');
    await byId('signal-send').click();
    await expectText('flow-phase', 'approved', FLOW_WAIT);
    await expectText('flow-status', 'finished');
    await byId('signal-form').waitFor({ state: 'hidden' });
    flows.approval = id;
    await shot('detail-signal');
  });
}

async function tokenScenarios() {
  await step('the token form comes up, and a wrong token is refused', async () => {
    await page.goto(`${base}/`);
    await byId('token-dialog').waitFor();
    await expectText('token-reason', /requires an API token/);
    await shot('token-form');
    await byId('token-input').fill(`${token}-wrong`);
    await byId('token-submit').click();
    await expectText('token-reason', /did not accept that token/);
    await byId('token-dialog').waitFor();
  });

  await step('with the right token, the list loads', async () => {
    await byId('token-input').fill(token);
    await byId('token-submit').click();
    await byId('token-dialog').waitFor({ state: 'hidden' });
    await byId('list-empty').waitFor();
    await page.locator('[data-testid=live-status][data-state=live]').waitFor();
    await byId('forget-token').waitFor();
    await shot('token-list');
  });

  await step('the token serves the form, the commands and the event streams', async () => {
    const id = await startFlow('demo', QUICK);
    await expectFinished();
    await byId('nav-flows').click();
    await expectRows([id], 'the flow started with the token');
  });

  await step('the token is kept for the tab, and forgotten on demand', async () => {
    await page.reload();
    await expectCount('[data-testid=flow-row]', 1);
    if (await byId('token-dialog').isVisible()) throw new Error('the token was asked for again');
    await byId('forget-token').click();
    await byId('token-dialog').waitFor();
  });
}

try {
  console.log(`dashboard at ${base}${token ? ' (with an API token)' : ''}, Chromium ${context.browser()?.version() ?? ''}`);
  if (token) await tokenScenarios();
  else await openScenarios();
  console.log('all dashboard checks passed');
  await finish(0);
} catch (error) {
  const file = join(shots, `failure-${current.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').toLowerCase()}.png`);
  console.error(`FAILED - ${current}\n${error.stack || error}`);
  console.error(`page: ${page.url()}`);
  await page.screenshot({ path: file, fullPage: true }).then(
    () => console.error(`screenshot: ${file}`),
    (shotError) => console.error(`no screenshot: ${shotError.message}`),
  );
  await finish(1);
}
