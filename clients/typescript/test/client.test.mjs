// MLXFineTuningService against a real `mlxtune serve` training the tiny LFM2 fixture.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { MLXFineTuningService, MLXTuneError } from '../dist/index.js';
import { startServer, tinyConfig } from '../../../tests/support/mlxtune-server.mjs';

let server, svc;

before(async () => {
  server = await startServer();
  svc = new MLXFineTuningService({ baseUrl: server.base });
});
after(() => server?.stop());

async function until(id, statuses, timeoutMs = 120_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const job = await svc.getJobStatus(id);
    if (statuses.includes(job.status)) return job;
    assert.ok(Date.now() < end, `job ${id} stuck in ${job.status}`);
    await new Promise((ok) => setTimeout(ok, 50));
  }
}

test('startFineTuning queues a job; getJobStatus reports completion_percentage up to 100', async () => {
  const job = await svc.startFineTuning(tinyConfig(12, { checkpoint: { everySteps: 6 } }));
  assert.match(job.id, /^ftjob-/);
  assert.equal(job.status, 'queued');
  assert.equal(job.progress.completion_percentage, 0);
  const done = await until(job.id, ['succeeded', 'failed']);
  assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
  assert.equal(done.progress.step, 12);
  assert.equal(done.progress.completion_percentage, 100);
  assert.ok(done.fine_tuned_model, 'the output directory is named');

  const metrics = await svc.metrics(job.id);
  assert.deepEqual(metrics.data.map((m) => m.step), Array.from({ length: 12 }, (_, i) => i + 1));
  assert.ok(metrics.data.every((m) => Number.isFinite(m.loss)));
  const ckpts = await svc.checkpoints(job.id);
  assert.ok(ckpts.data.some((c) => c.step_number === 6), JSON.stringify(ckpts.data));
  const events = await svc.events(job.id);
  assert.ok(events.data.some((e) => e.type === 'status' && e.data?.status === 'succeeded'));
  const page = await svc.events(job.id, { after: events.data[0].id, limit: 2 });
  assert.deepEqual(page.data.map((e) => e.id), events.data.slice(1, 3).map((e) => e.id));
  assert.equal(page.has_more, true);

  const list = await svc.listJobs({ status: 'succeeded', limit: 10 });
  assert.ok(list.data.some((j) => j.id === job.id));
  assert.equal((await svc.listJobs({ status: 'queued' })).data.length, 0);
  const gone = await svc.deleteJob(job.id);
  assert.equal(gone.deleted, true);
});

test('a bad field is an MLXTuneError with status 422, its code and the field as param', async () => {
  const bad = tinyConfig(5);
  bad.parameters.learningRate = -1;
  const err = await svc.startFineTuning(bad).then(() => null, (e) => e);
  assert.ok(err instanceof MLXTuneError, String(err));
  assert.equal(err.status, 422);
  assert.equal(err.param, 'parameters.learningRate');
  assert.equal(typeof err.code, 'string');
  assert.ok(err.message.length > 0);

  const missing = await svc.getJobStatus('ftjob-nope').then(() => null, (e) => e);
  assert.equal(missing.status, 404);
  assert.equal(missing.code, 'not_found');
  const status = await svc.listJobs({ status: 'bogus' }).then(() => null, (e) => e);
  assert.equal(status.status, 422);
  assert.equal(status.param, 'status');
  const down = new MLXFineTuningService({ baseUrl: 'http://127.0.0.1:9' });
  const net = await down.listJobs().then(() => null, (e) => e);
  assert.ok(net instanceof MLXTuneError);
  assert.equal(net.status, 0);
  assert.equal(net.code, 'network_error');
});

test('pause, resume and cancel move the job; an illegal change is a 409', async () => {
  const job = await svc.startFineTuning(tinyConfig(100000));
  await until(job.id, ['running']);
  await svc.pause(job.id);
  const paused = await until(job.id, ['paused']);
  assert.ok(paused.progress.step > 0);
  await svc.resume(job.id);
  const resumed = await until(job.id, ['running']);
  const later = await (async () => {
    for (;;) {
      const j = await svc.getJobStatus(job.id);
      if (j.progress.step > resumed.progress.step) return j;
      await new Promise((ok) => setTimeout(ok, 50));
    }
  })();
  assert.ok(later.progress.step > paused.progress.step, 'training continued');
  const cancelled = await svc.cancel(job.id).then(() => until(job.id, ['cancelled']));
  assert.equal(cancelled.status, 'cancelled');
  const err = await svc.resume(job.id).then(() => null, (e) => e);
  assert.ok(err instanceof MLXTuneError);
  assert.equal(err.status, 409);
});
