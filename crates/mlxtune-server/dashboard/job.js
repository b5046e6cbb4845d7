// One job: summary, pause / resume / cancel, live charts fed by the job stream, events log,
// checkpoints. The stream replays every stored event on load (`?after=0`), so a reload
// shows the full history; reconnects continue after the last event id.

import { jobs } from './api.js';
import { LineChart } from './chart.js';
import { badge, bytes, h, num, progressBar, time } from './dom.js';
import { promptBox } from './generate.js';
import { openJobStream } from './stream.js';

const LOG_ROWS = 400;
const ACTIONS = {
  pause: ['running'],
  resume: ['paused'],
  cancel: ['validating_files', 'queued', 'running', 'paused'],
};

function debounce(fn, ms) {
  let timer;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

export function jobPage(view, id) {
  const charts = {
    loss: new LineChart('loss', 'Loss', [
      { name: 'train', color: '#3b5bdb' },
      { name: 'validation', color: '#e8590c', dots: true },
    ]),
    lr: new LineChart('lr', 'Learning rate', [{ name: 'lr', color: '#2b8a3e' }]),
    tps: new LineChart('tps', 'Tokens / s', [{ name: 'tokens/s', color: '#862e9c' }]),
    memory: new LineChart('memory', 'Memory', [
      { name: 'active', color: '#0b7285' },
      { name: 'peak', color: '#c2255c' },
    ], bytes),
  };
  const statusEl = h('span', { id: 'job-status' });
  const progressEl = h('span', { id: 'job-progress' });
  const stepEl = h('span', { id: 'job-step' });
  const etaEl = h('span', {});
  const connEl = h('span', { id: 'stream-state', class: 'legend' });
  const errEl = h('div', { id: 'job-error', class: 'error', role: 'alert' });
  const buttons = Object.fromEntries(Object.keys(ACTIONS).map((a) => [a, h('button', {
    id: `btn-${a}`, type: 'button', disabled: true, onclick: () => control(a),
  }, a[0].toUpperCase() + a.slice(1))]));
  const genEl = h('section', { id: 'try-model' });
  const logBody = h('tbody', {});
  const ckptBody = h('tbody', {});
  let status = null;
  let statusChanges = 0;

  view.replaceChildren(
    h('h1', {}, 'Job ', h('span', { class: 'mono' }, id)),
    h('div', { class: 'card summary' },
      h('div', {}, h('span', {}, 'Status'), statusEl),
      h('div', {}, h('span', {}, 'Progress'), progressEl),
      h('div', {}, h('span', {}, 'Step'), stepEl),
      h('div', {}, h('span', {}, 'ETA'), etaEl),
      h('div', { class: 'controls' }, Object.values(buttons)),
      connEl),
    errEl,
    h('section', { class: 'charts' }, Object.values(charts).map((c) => c.el)),
    genEl,
    h('h2', {}, 'Checkpoints'),
    h('table', { id: 'checkpoints' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Step'), h('th', {}, 'Train loss'), h('th', {}, 'Validation loss'), h('th', {}, 'Path'))),
      ckptBody),
    h('h2', {}, 'Events'),
    h('div', { class: 'log card' }, h('table', { id: 'events' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {}, 'Type'), h('th', {}, 'Message'))),
      logBody)),
  );

  function setStatus(s) {
    status = s;
    statusEl.replaceChildren(badge(s));
    for (const [a, ok] of Object.entries(ACTIONS)) buttons[a].disabled = !ok.includes(s);
    if (s !== 'running') etaEl.textContent = '';
  }

  function setProgress(step, total, pct, eta) {
    progressEl.replaceChildren(progressBar(pct));
    stepEl.textContent = total ? `${step} / ${total}` : String(step);
    if (eta !== undefined) etaEl.textContent = status === 'running' && eta > 0 ? `${Math.round(eta)} s` : '';
  }

  function showJob(job) {
    setStatus(job.status);
    const p = job.progress;
    setProgress(p.step, p.total_steps, p.completion_percentage);
    errEl.textContent = job.error ? `${job.error.code}: ${job.error.message}` : '';
    if (job.status === 'succeeded' && job.fine_tuned_model && !genEl.firstChild) {
      genEl.append(h('h2', {}, 'Try the fine-tuned model'), promptBox(job.fine_tuned_model));
    }
  }

  async function control(action) {
    errEl.textContent = '';
    const seen = statusChanges;
    try {
      const job = await jobs.control(id, action);
      // The stream may already have reported a later state (resume → running arrives
      // before the answer saying queued): the answer only counts if it did not.
      if (statusChanges === seen) showJob(job);
    } catch (e) {
      errEl.textContent = `${action}: ${e.message}`;
    }
  }

  async function refreshCheckpoints() {
    try {
      const list = await jobs.checkpoints(id);
      ckptBody.replaceChildren(...list.data.map((c) => h('tr', {},
        h('td', {}, c.step_number),
        h('td', {}, num(c.metrics.train_loss ?? NaN)),
        h('td', {}, num(c.metrics.valid_loss ?? NaN)),
        h('td', { class: 'mono' }, c.path))));
      if (!list.data.length) ckptBody.replaceChildren(h('tr', {}, h('td', { colspan: 4, class: 'empty' }, 'none yet')));
    } catch (e) {
      ckptBody.replaceChildren(h('tr', {}, h('td', { colspan: 4, class: 'error' }, e.message)));
    }
  }

  function log(ev) {
    logBody.prepend(h('tr', { class: `lvl-${ev.level}`, 'data-type': ev.type },
      h('td', {}, time(ev.created_at)), h('td', {}, ev.type), h('td', {}, ev.message)));
    while (logBody.childElementCount > LOG_ROWS) logBody.lastElementChild.remove();
  }

  function addStep(d) {
    charts.loss.add('train', d.step, d.current_loss ?? d.loss);
    charts.lr.add('lr', d.step, d.learning_rate);
    charts.tps.add('tokens/s', d.step, d.tokens_per_second);
    charts.memory.add('active', d.step, d.active_memory_bytes);
    charts.memory.add('peak', d.step, d.peak_memory_bytes);
  }

  // Live step updates are rate-limited by the server; when the job stops (paused or
  // finished) the steps skipped live are filled in from the stored metrics.
  async function backfill() {
    try {
      for (const m of (await jobs.metrics(id)).data) addStep(m);
    } catch {
      // the live points stay; a reload replays everything
    }
  }

  // After a state change (once per burst: a replay can hold many): the job's own figures
  // (step updates are rate-limited), and every step once it stopped.
  const syncSoon = debounce(() => {
    const seen = statusChanges;
    jobs.get(id).then((job) => { if (statusChanges === seen) showJob(job); }, () => {});
    if (status !== 'running' && status !== 'queued') backfill();
  }, 200);
  const checkpointsSoon = debounce(refreshCheckpoints, 200);

  function onMessage(m) {
    if (m.type === 'snapshot') return showJob(m.job);
    const d = m.data || {};
    switch (m.type) {
      case 'mlx_training_update':
        addStep(d);
        setProgress(d.step, d.total_steps, d.completion_percentage, d.eta_seconds);
        return;
      case 'metrics':
        charts.loss.add('validation', d.step, d.val_loss);
        break;
      case 'checkpoint':
        checkpointsSoon();
        break;
      case 'status':
        if (d.status) {
          statusChanges++;
          setStatus(d.status);
          syncSoon();
        }
        break;
      default:
    }
    log(m);
  }

  const stream = openJobStream(id, {
    onMessage,
    onState: (s, why) => { connEl.textContent = why ? `stream: ${s} (${why})` : `stream: ${s}`; connEl.dataset.state = s; },
  });
  // A handle for the console and the browser tests: the stream and the charts' points.
  const handle = { stream, steps: (chart) => [...charts[chart].series[0].points.keys()] };
  window.mlxtuneJob = handle;
  refreshCheckpoints();
  const seen = statusChanges;
  jobs.get(id).then((job) => { if (statusChanges === seen) showJob(job); }, (e) => {
    errEl.textContent = e.message;
    if (e.status === 404) stream.close();
  });
  return () => { stream.close(); if (window.mlxtuneJob === handle) delete window.mlxtuneJob; };
}
