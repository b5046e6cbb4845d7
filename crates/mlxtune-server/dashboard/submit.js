// The submit form: the product document's config as fields (plus extra JSON merged in).
// A 422 names the offending field in `error.param`; the message appears next to it.

import { jobs } from './api.js';
import { h } from './dom.js';

// [param, label, kind, default, choices or hint]
const FIELDS = [
  ['name', 'Name', 'text', '', 'optional'],
  ['baseModel', 'Base model', 'text', '', 'a directory name under the model roots'],
  ['fineTuneType', 'Fine-tune type', 'select', 'lora', ['lora', 'dora', 'qlora', 'full']],
  ['dataset.trainingData', 'Training data', 'text', '', 'name, local://, s3:// or https://'],
  ['dataset.validationData', 'Validation data', 'text', '', 'optional'],
  ['dataset.format', 'Data format', 'select', 'chat', ['chat', 'completion', 'text', '']],
  ['parameters.learningRate', 'Learning rate', 'number', '0.0002'],
  ['parameters.batchSize', 'Batch size', 'number', '8'],
  ['parameters.epochs', 'Epochs', 'number', '3'],
  ['parameters.sequenceLength', 'Sequence length', 'number', '2048'],
  ['parameters.loraRank', 'LoRA rank', 'number', '16'],
  ['parameters.loraAlpha', 'LoRA alpha', 'number', '32'],
  ['maxSteps', 'Max steps', 'number', '', 'optional'],
  ['optimization.mixedPrecision', 'Precision', 'select', 'bf16', ['bf16', 'fp16', 'fp32']],
  ['optimization.gradientCheckpointing', 'Gradient checkpointing', 'checkbox', true],
];

function setPath(obj, path, value) {
  const keys = path.split('.');
  let o = obj;
  for (const k of keys.slice(0, -1)) o = o[k] ??= {};
  o[keys.at(-1)] = value;
}

function merge(a, b) {
  for (const [k, v] of Object.entries(b)) {
    if (v && typeof v === 'object' && !Array.isArray(v) && a[k] && typeof a[k] === 'object') merge(a[k], v);
    else a[k] = v;
  }
  return a;
}

export function submitPage(view, navigate) {
  const inputs = new Map();
  const rows = FIELDS.map(([param, label, kind, def, extra]) => {
    const id = `f-${param.replace(/\./g, '-')}`;
    let input;
    if (kind === 'select') {
      input = h('select', { id, name: param }, extra.map((o) => h('option', { value: o, selected: o === def }, o || '(detect)')));
    } else if (kind === 'checkbox') {
      input = h('input', { id, name: param, type: 'checkbox', checked: def });
    } else {
      input = h('input', { id, name: param, type: kind, step: kind === 'number' ? 'any' : undefined, value: def });
    }
    inputs.set(param, [kind, input]);
    return h('div', { class: 'field', 'data-param': param },
      h('label', { for: id }, label), input,
      typeof extra === 'string' ? h('span', { class: 'hint' }, extra) : null);
  });
  const extra = h('textarea', { id: 'f-extra', name: 'extra', placeholder: '{"eval": {"everySteps": 50}, "checkpoint": {"everySteps": 100}}' });
  const formErr = h('div', { id: 'form-error', class: 'error', role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Submit job');
  const form = h('form', { class: 'job card', novalidate: true, onsubmit: (e) => { e.preventDefault(); send(); } },
    h('div', { class: 'grid' }, rows),
    h('div', { class: 'field', 'data-param': '' },
      h('label', { for: 'f-extra' }, 'More settings (JSON, merged over the fields; see docs/training.md)'), extra),
    formErr,
    h('p', {}, submit));
  view.replaceChildren(h('h1', {}, 'New fine-tuning job'), form);

  function clearErrors() {
    formErr.textContent = '';
    for (const el of form.querySelectorAll('.field-error')) el.remove();
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  }

  function fieldFor(param) {
    let p = param;
    while (p) {
      const f = form.querySelector(`.field[data-param="${CSS.escape(p)}"]`);
      if (f) return f;
      const cut = p.search(/(\.[^.[\]]*|\[\d+\])$/);
      if (cut <= 0) return null;
      p = p.slice(0, cut);
    }
    return null;
  }

  function showError(e) {
    const param = e.param || '';
    // The field itself, else the closest enclosing one (`parameters.loraRank` for
    // `parameters.loraRank[0]`), else the JSON box for settings only it can hold.
    let field = fieldFor(param);
    if (!field && param) field = extra.parentElement;
    if (!field) { formErr.textContent = e.message; return; }
    const input = field.querySelector('input, select, textarea');
    input.setAttribute('aria-invalid', 'true');
    field.append(h('span', { class: 'field-error', 'data-error-for': param }, e.message));
    input.focus();
  }

  async function send() {
    clearErrors();
    const config = {};
    for (const [param, [kind, input]] of inputs) {
      if (kind === 'checkbox') setPath(config, param, input.checked);
      else if (input.value === '') continue;
      else if (kind === 'number') setPath(config, param, Number(input.value));
      else setPath(config, param, input.value);
    }
    if (extra.value.trim()) {
      try {
        merge(config, JSON.parse(extra.value));
      } catch (err) {
        showError({ param: 'extra', message: `not JSON: ${err.message}` });
        return;
      }
    }
    submit.disabled = true;
    try {
      const job = await jobs.create(config);
      navigate(`#/jobs/${job.id}`);
    } catch (e) {
      showError(e);
    } finally {
      submit.disabled = false;
    }
  }
  return () => {};
}
