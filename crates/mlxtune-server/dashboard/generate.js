// The prompt box of a succeeded job: generates with its fine-tuned model through
// `POST /v1/models/{id}/generate` (the product document's `generate({prompt, maxTokens,
// temperature})`).

import { models } from './api.js';
import { h } from './dom.js';

export function promptBox(modelId) {
  const prompt = h('textarea', { id: 'gen-prompt', rows: 3, placeholder: 'Ask the fine-tuned model something' });
  const maxTokens = h('input', { id: 'gen-max-tokens', type: 'number', min: 1, value: 64 });
  const temperature = h('input', { id: 'gen-temperature', type: 'number', min: 0, max: 2, step: 'any', value: 0.7 });
  const chat = h('input', { id: 'gen-chat', type: 'checkbox', checked: true });
  const button = h('button', { id: 'gen-run', type: 'submit', class: 'primary' }, 'Generate');
  const output = h('pre', { id: 'gen-output', class: 'output' });
  const meta = h('div', { id: 'gen-meta', class: 'legend', role: 'status' });

  async function run() {
    button.disabled = true;
    meta.textContent = 'generating…';
    output.textContent = '';
    try {
      const r = await models.generate(modelId, {
        prompt: prompt.value,
        maxTokens: Number(maxTokens.value) || undefined,
        temperature: temperature.value === '' ? undefined : Number(temperature.value),
        chat: chat.checked,
      });
      output.textContent = r.text;
      meta.dataset.tokens = String(r.usage.completion_tokens);
      meta.textContent = `${r.usage.completion_tokens} tokens, finish: ${r.finishReason}`;
    } catch (e) {
      meta.textContent = '';
      output.textContent = '';
      meta.append(h('span', { class: 'error' }, `${e.status || ''} ${e.message}`));
    } finally {
      button.disabled = false;
    }
  }

  return h('form', { class: 'job card', id: 'generate', onsubmit: (e) => { e.preventDefault(); run(); } },
    h('p', {}, 'Model ', h('span', { class: 'mono' }, modelId)),
    h('div', { class: 'field' }, h('label', { for: 'gen-prompt' }, 'Prompt'), prompt),
    h('div', { class: 'grid' },
      h('div', { class: 'field' }, h('label', { for: 'gen-max-tokens' }, 'Max tokens'), maxTokens),
      h('div', { class: 'field' }, h('label', { for: 'gen-temperature' }, 'Temperature'), temperature),
      h('div', { class: 'field' }, h('label', { for: 'gen-chat' }, 'Chat template'), chat)),
    h('p', {}, button),
    meta,
    output);
}
