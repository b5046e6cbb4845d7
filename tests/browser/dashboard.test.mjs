// The dashboard in Debian's Chromium (headless, driven by playwright-core) against a real
// `mlxtune serve` with an API key, training the tiny LFM2 fixture. What a user would see:
// the key prompt, a bad field's error next to it, charts that grow while the job runs, the
// whole history after a reload, a dropped stream resuming without duplicates, and pause /
// resume / cancel from the buttons, and a prompt box on a succeeded job. Screenshots go to $ARTIFACTS (target/browser-artifacts).

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { startServer, tinyConfig } from '../support/mlxtune-server.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const artifacts = process.env.ARTIFACTS || join(root, 'target/browser-artifacts');
const KEY = 'dash-key-7f3a';
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let server, browser, page, jobId;
const frames = []; // every job-stream message the page received: {i: socket index, msg}
const sockets = []; // the job-stream URLs the page opened

const shot = (name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
const points = (chart) => page.getAttribute(`#chart-${chart}`, 'data-points').then(Number);
const attr = (sel, a) => page.getAttribute(sel, a);
const status = () => page.getAttribute('#job-status .badge', 'data-status');

async function until(cond, ms = 30_000) {
  const end = Date.now() + ms;
  while (!cond()) {
    assert.ok(Date.now() < end, `timed out waiting for ${cond}`);
    await new Promise((ok) => setTimeout(ok, 50));
  }
}

async function api(path, init = {}) {
  const r = await fetch(`${server.base}${path}`, {
    ...init, headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
  });
  return r.json();
}

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  server = await startServer({ apiKeys: [KEY] });
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: FLAGS });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(30_000);
  page.on('pageerror', (e) => console.error('page error:', e));
  page.on('websocket', (ws) => {
    if (!ws.url().includes('/stream')) return;
    const i = sockets.push(ws.url()) - 1;
    ws.on('framereceived', (f) => frames.push({ i, msg: JSON.parse(f.payload) }));
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('without a key the page says the server needs one; with it the job list loads', async () => {
  await page.goto(`${server.base}/`);
  await page.waitForSelector('#key-state:has-text("needs an API key")');
  await page.fill('#api-key', KEY);
  await page.click('#key-form button[type=submit]');
  await page.waitForSelector('#jobs td.empty:has-text("No jobs yet")');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('mlxtune.apiKey')), KEY);
});

test('an unknown job id says it is not found', async () => {
  await page.goto(`${server.base}/#/jobs/ftjob-doesnotexist`);
  await page.waitForSelector('#job-error:text-matches("not found", "i")');
});

async function fillForm({ model = 'lfm2-tiny', lr = '0.003', extra = '' } = {}) {
  await page.goto(`${server.base}/#/new`);
  await page.fill('#f-name', 'browser test');
  await page.fill('#f-baseModel', model);
  await page.fill('#f-dataset-trainingData', 'local://chat.jsonl');
  await page.fill('#f-dataset-validationData', 'local://chat.jsonl');
  await page.fill('#f-parameters-learningRate', lr);
  await page.fill('#f-parameters-batchSize', '2');
  await page.fill('#f-parameters-sequenceLength', '64');
  await page.fill('#f-parameters-loraRank', '4');
  await page.fill('#f-parameters-loraAlpha', '8');
  await page.fill('#f-parameters-epochs', '1000');
  await page.fill('#f-maxSteps', '6000');
  await page.selectOption('#f-optimization-mixedPrecision', 'fp32');
  await page.uncheck('#f-optimization-gradientCheckpointing');
  await page.fill('#f-extra', extra);
}

test('a bad field shows the server\'s error next to that field', async () => {
  await fillForm({ lr: '-1' });
  await page.click('form.job button[type=submit]');
  const err = page.locator('.field[data-param="parameters.learningRate"] .field-error');
  await err.waitFor();
  assert.match(await err.textContent(), /learningRate|positive|greater/i);
  assert.equal(await attr('#f-parameters-learningRate', 'aria-invalid'), 'true');
  await shot('bad-field');

  await fillForm({ model: 'no-such-model' });
  await page.click('form.job button[type=submit]');
  await page.locator('.field[data-param="baseModel"] .field-error').waitFor();
  assert.equal(await page.locator('.field-error').count(), 1, 'only the model is blamed now');
  assert.equal(await attr('#f-parameters-learningRate', 'aria-invalid'), null);
});

test('a submitted job opens its page, and the charts gain points while it runs', async () => {
  await fillForm({ extra: '{"eval": {"everySteps": 10}, "checkpoint": {"everySteps": 25}}' });
  await page.click('form.job button[type=submit]');
  await page.waitForURL(/#\/jobs\/ftjob-/);
  jobId = page.url().split('#/jobs/')[1];
  await page.waitForFunction(() => document.querySelector('#job-status .badge')?.dataset.status === 'running');
  await page.waitForFunction(() => Number(document.querySelector('#chart-loss').dataset.points) >= 5);
  const before = await points('loss');
  await page.waitForFunction((n) => Number(document.querySelector('#chart-loss').dataset.points) >= n + 10, before);
  for (const c of ['lr', 'tps', 'memory']) assert.ok((await points(c)) > 0, `${c} chart has points`);
  await page.waitForSelector('#chart-loss polyline[data-series="validation"]');
  await page.waitForSelector('#checkpoints td:text-matches("^\\\\d+$")');
  assert.ok(sockets.every((u) => !u.includes(KEY)), 'the key never appears in a URL');
  await shot('job-running');
});

test('a reload mid-run shows the full history: every step from 1, no gap', async () => {
  const stored = (await api(`/v1/fine_tuning/jobs/${jobId}/metrics`)).data.length;
  await page.reload();
  await page.waitForFunction((n) => {
    const el = document.querySelector('#chart-loss');
    return Number(el.dataset.points) >= n && el.dataset.firstX === '1';
  }, stored);
  const steps = new Set(await page.evaluate(() => window.mlxtuneJob.steps('loss')));
  const missing = Array.from({ length: stored }, (_, i) => i + 1).filter((s) => !steps.has(s));
  assert.deepEqual(missing, [], `every stored step 1..${stored} is drawn after the reload`);
  assert.ok(stored >= 15, `the job had ${stored} steps before the reload`);
  await shot('job-after-reload');
  assert.equal(await status(), 'running');
});

test('a dropped stream reconnects with ?after= the last event id: nothing lost, nothing twice', async () => {
  const opened = sockets.length;
  // In one task: the last id seen, then the drop (a closing socket delivers nothing more).
  const lastId = await page.evaluate(() => {
    const { stream } = window.mlxtuneJob;
    const id = stream.lastEventId;
    stream.drop();
    return id;
  });
  const seq = (id) => Number(id.slice('ftevent-'.length));
  assert.match(lastId, /^ftevent-\d+$/);
  assert.ok(seq(lastId) > 0);
  const isEvent = (msg) => typeof msg.id === 'string' && msg.id.startsWith('ftevent-');
  const ids = (i) => frames.filter((f) => f.i === i && isEvent(f.msg)).map((f) => f.msg.id);
  await until(() => sockets.length > opened && ids(opened).length > 5);
  await page.waitForFunction(() => document.querySelector('#stream-state').dataset.state === 'live');
  assert.match(sockets[opened], new RegExp(`after=${lastId}$`), 'the reconnect asks for ?after=<last id>');
  const next = (await api(`/v1/fine_tuning/jobs/${jobId}/events?after=${lastId}&limit=1`)).data[0].id;
  assert.equal(ids(opened)[0], next, 'the new socket starts with the first stored event after the last one seen: no gap');
  // The old socket may still carry frames after close(); the page drops them (a closing
  // socket delivers nothing), so what the page had is exactly the ids up to lastId.
  const had = ids(opened - 1).filter((id) => seq(id) <= seq(lastId));
  const got = [...had, ...ids(opened)];
  assert.equal(new Set(got).size, got.length, 'no event delivered twice');
  assert.deepEqual(got, [...got].sort((a, b) => seq(a) - seq(b)), 'events in order across the reconnect');
});

test('pause and resume work from the buttons', async () => {
  await page.click('#btn-pause');
  await page.waitForFunction(() => document.querySelector('#job-status .badge')?.dataset.status === 'paused');
  assert.equal(await page.isDisabled('#btn-pause'), true);
  assert.equal(await page.isEnabled('#btn-resume'), true);
  const pausedAt = (await api(`/v1/fine_tuning/jobs/${jobId}`)).progress.step;
  await page.waitForFunction((n) => document.querySelector('#chart-loss').dataset.lastX === String(n), pausedAt);
  const held = await attr('#chart-loss', 'data-last-x');
  await new Promise((ok) => setTimeout(ok, 1000));
  assert.equal(await attr('#chart-loss', 'data-last-x'), held, 'no steps while paused');
  assert.equal((await api(`/v1/fine_tuning/jobs/${jobId}`)).status, 'paused');
  await shot('job-paused');
  await page.click('#btn-resume');
  await page.waitForFunction(() => document.querySelector('#job-status .badge')?.dataset.status === 'running');
  await page.waitForFunction((h) => Number(document.querySelector('#chart-loss').dataset.lastX) > Number(h) + 5, held);
  assert.ok(await page.locator('#events tr[data-type="status"] >> text=paused').count() >= 1, 'the log shows the pause');
});

test('cancel works from the button and the list shows the final state', async () => {
  await page.click('#btn-cancel');
  await page.waitForFunction(() => document.querySelector('#job-status .badge')?.dataset.status === 'cancelled');
  for (const b of ['pause', 'resume', 'cancel']) assert.equal(await page.isDisabled(`#btn-${b}`), true, b);
  assert.equal((await api(`/v1/fine_tuning/jobs/${jobId}`)).status, 'cancelled');
  await shot('job-cancelled');
  await page.goto(`${server.base}/#/`);
  await page.waitForSelector(`#jobs tr[data-job="${jobId}"] .badge[data-status="cancelled"]`);
  await shot('job-list');
});

test('a succeeded job offers a prompt box that generates with its fine-tuned model', async () => {
  const job = await api('/v1/fine_tuning/jobs', { method: 'POST', body: JSON.stringify(tinyConfig(10)) });
  await page.goto(`${server.base}/#/jobs/${job.id}`);
  await page.waitForFunction(() => document.querySelector('#job-status .badge')?.dataset.status === 'succeeded', null, { timeout: 60_000 });
  await page.waitForFunction(() => window.mlxtuneJob.steps('loss').length === 10);
  const steps = (await page.evaluate(() => window.mlxtuneJob.steps('loss'))).sort((a, b) => a - b);
  assert.deepEqual(steps, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'the finished curve has every step');
  const modelId = (await api(`/v1/fine_tuning/jobs/${job.id}`)).fine_tuned_model;
  assert.ok((await page.textContent('#generate')).includes(modelId), 'the box names the model');
  await page.fill('#gen-prompt', 'Say it.');
  await page.fill('#gen-max-tokens', '8');
  await page.fill('#gen-temperature', '0');
  await page.click('#gen-run');
  await page.waitForFunction(() => Number(document.querySelector('#gen-meta').dataset.tokens) >= 1);
  const direct = await api(`/v1/models/${encodeURIComponent(modelId)}/generate`, {
    method: 'POST', body: JSON.stringify({ prompt: 'Say it.', maxTokens: 8, temperature: 0, chat: true }),
  });
  assert.equal(await page.textContent('#gen-output'), direct.text, 'the page shows what the model generates');
  await shot('generate');
});
