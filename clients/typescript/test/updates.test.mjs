// onUpdate: the job WebSocket through the client, with an API key (sent as a subprotocol)
// and every step streamed live (stream_update_interval_ms = 0). Node 20 has no global
// WebSocket, so `ws` is passed in.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';

import { MLXFineTuningService, MLXTuneError, eventSequence } from '../dist/index.js';
import { startServer, tinyConfig } from '../../../tests/support/mlxtune-server.mjs';

const KEY = 'client-key-42';
let server, svc;

before(async () => {
  server = await startServer({ apiKeys: [KEY], streamIntervalMs: 0 });
  svc = new MLXFineTuningService({ baseUrl: server.base, apiKey: KEY, WebSocket });
});
after(() => server?.stop());

test('onUpdate emits mlx_training_update for every step exactly once across a dropped connection', async () => {
  const total = 60;
  const job = await svc.startFineTuning(tinyConfig(total));
  const steps = [];
  const opens = [];
  let snapshot = null;
  const sub = svc.onUpdate(job.id, (data) => {
    steps.push(data.step);
    assert.ok(Number.isFinite(data.current_loss) && Number.isFinite(data.learning_rate));
    assert.ok(Number.isFinite(data.tokens_per_second) && data.gpu_memory_used >= 0);
    if (steps.length === 10) sub.drop();
  });
  sub.on('open', (o) => opens.push(o)).on('snapshot', (j) => { snapshot ??= j; });
  const finished = await new Promise((ok) => sub.on('finished', ok));
  assert.equal(finished, 'succeeded');
  assert.equal(snapshot.id, job.id);
  assert.deepEqual(steps, Array.from({ length: total }, (_, i) => i + 1), 'no gap, no duplicate');
  assert.ok(opens.length >= 2, 'it reconnected');
  assert.equal(opens[0].reconnect, false);
  assert.equal(opens[1].reconnect, true);
  assert.match(opens[1].after, /^ftevent-\d+$/);
  assert.ok(eventSequence(opens[1].after) > 0, 'the reconnect asked for ?after=<last event id>');
});

test('onUpdate with after replays only the events after that id', async () => {
  const job = await svc.startFineTuning(tinyConfig(8));
  await new Promise((ok) => svc.onUpdate(job.id).on('finished', ok));
  const events = (await svc.events(job.id, { limit: 1000 })).data;
  const cut = events.find((e) => e.type === 'mlx_training_update' && e.data.step === 5).id;
  const seen = [];
  const sub = svc.onUpdate(job.id, undefined, { after: cut });
  sub.on('event', (e) => seen.push(e.id));
  await new Promise((ok) => sub.on('finished', ok));
  const later = events.filter((e) => eventSequence(e.id) > eventSequence(cut));
  assert.deepEqual(seen, later.map((e) => e.id));
  // Clients from before `ftevent-` ids page with the bare number: the same events.
  const old = (await svc.events(job.id, { after: eventSequence(cut), limit: 1000 })).data;
  assert.deepEqual(old.map((e) => e.id), later.map((e) => e.id));
});

test('a wrong key is refused: 403 over HTTP, and the stream never opens', async () => {
  const wrong = new MLXFineTuningService({ baseUrl: server.base, apiKey: 'not-it', WebSocket });
  const err = await wrong.listJobs().then(() => null, (e) => e);
  assert.ok(err instanceof MLXTuneError);
  assert.equal(err.status, 403);
  assert.equal(err.code, 'forbidden');
  const job = await svc.startFineTuning(tinyConfig(3));
  let opened = false;
  const sub = wrong.onUpdate(job.id, undefined, { reconnect: false });
  sub.on('open', () => { opened = true; });
  await new Promise((ok) => sub.on('disconnect', ok));
  assert.equal(opened, false);
});
