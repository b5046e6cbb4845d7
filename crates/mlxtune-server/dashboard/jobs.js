// The job list: status and progress of the newest jobs, refreshed every two seconds.

import { jobs } from './api.js';
import { badge, h, progressBar, time } from './dom.js';

export function jobsPage(view) {
  const body = h('tbody', {});
  const err = h('div', { class: 'error', role: 'alert' });
  view.replaceChildren(
    h('h1', {}, 'Fine-tuning jobs'),
    err,
    h('table', { id: 'jobs' },
      h('thead', {}, h('tr', {}, ['Job', 'Name', 'Model', 'Status', 'Progress', 'Created'].map((t) => h('th', {}, t)))),
      body),
  );
  let stopped = false;
  async function refresh() {
    try {
      const list = await jobs.list();
      err.textContent = '';
      body.replaceChildren(...list.data.map((j) => h('tr', { 'data-job': j.id },
        h('td', { class: 'mono' }, h('a', { href: `#/jobs/${j.id}` }, j.id)),
        h('td', {}, j.name || ''),
        h('td', {}, j.model),
        h('td', {}, badge(j.status)),
        h('td', {}, progressBar(j.progress.completion_percentage)),
        h('td', {}, time(j.created_at)))));
      if (!list.data.length) {
        body.replaceChildren(h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No jobs yet. ', h('a', { href: '#/new' }, 'Submit one.'))));
      }
    } catch (e) {
      err.textContent = e.message;
    }
  }
  refresh();
  const timer = setInterval(() => { if (!stopped) refresh(); }, 2000);
  return () => { stopped = true; clearInterval(timer); };
}
