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

  const model = await svc.loadFineTunedModel({ modelId: done.fine_tuned_model });
  assert.equal(model.id, done.fine_tuned_model);
  assert.equal(model.info.lineage.job_id, job.id);
  const out = await model.generate({ prompt: 'Say it.', maxTokens: 4, temperature: 0, chat: true });
  assert.equal(typeof out.text, 'string');
  assert.ok(out.usage.completion_tokens >= 1 && out.usage.completion_tokens <= 4, JSON.stringify(out));
  assert.ok(['stop', 'length'].includes(out.finishReason));
  const again = await model.generate({ prompt: 'Say it.', maxTokens: 4, temperature: 0, chat: true });
  assert.equal(again.text, out.text, 'greedy generation repeats itself');

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
  assert.equal(err.type, 'invalid_request_error');
  assert.equal(typeof err.code, 'string');
  assert.ok(err.message.length > 0);

  const missing = await svc.getJobStatus('ftjob-nope').then(() => null, (e) => e);
  assert.equal(missing.status, 404);
  assert.equal(missing.code, 'not_found');
  assert.equal(missing.type, 'not_found_error');
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
  // A pause is honoured between micro-batches, so one asked before the first step ends
  // pauses at step 0: wait for a finished step to see the step kept across the pause.
  for (const end = Date.now() + 60_000; (await svc.getJobStatus(job.id)).progress.step < 1; ) {
    assert.ok(Date.now() < end, 'no first step');
    await new Promise((ok) => setTimeout(ok, 20));
  }
  await svc.pause(job.id);
  const paused = await until(job.id, ['paused']);
  assert.ok(paused.progress.step > 0);
  await svc.resume(job.id);
  const resumed = await until(job.id, ['running']);
  const later = await (async () => {
    const end = Date.now() + 60_000;
    for (;;) {
      const j = await svc.getJobStatus(job.id);
      if (j.progress.step > resumed.progress.step) return j;
      assert.ok(Date.now() < end, 'no step after resuming');
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

test('loadFineTunedModel by path registers the model once; an unknown id is a 404', async () => {
  const a = await svc.loadFineTunedModel({ modelPath: 'lfm2-tiny', id: 'tiny-base' });
  assert.equal(a.id, 'tiny-base');
  assert.equal(a.info.kind, 'base');
  const b = await svc.loadFineTunedModel({ modelPath: 'lfm2-tiny', id: 'tiny-base' });
  assert.equal(b.id, 'tiny-base', 'the second load finds the registered model');
  const out = await b.generate({ prompt: 'The quick', maxTokens: 3, temperature: 0 });
  assert.ok(out.usage.completion_tokens >= 1 && out.usage.prompt_tokens >= 1, JSON.stringify(out));
  const err = await svc.loadFineTunedModel({ modelId: 'ft:nope:x:ftjob-0' }).then(() => null, (e) => e);
  assert.ok(err instanceof MLXTuneError);
  assert.equal(err.status, 404);
});
