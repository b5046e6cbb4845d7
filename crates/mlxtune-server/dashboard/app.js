// The dashboard's entry: the API key box and a hash router (#/, #/new, #/jobs/<id>).

import { apiKey } from './api.js';
import { jobPage } from './job.js';
import { jobsPage } from './jobs.js';
import { submitPage } from './submit.js';

const view = document.getElementById('view');
const keyInput = document.getElementById('api-key');
const keyState = document.getElementById('key-state');
let leave = () => {};

function showKeyState(msg) {
  keyState.textContent = msg || (apiKey.get() ? 'key set for this tab' : '');
}

document.getElementById('key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  apiKey.set(keyInput.value.trim());
  keyInput.value = '';
  showKeyState();
  route();
});
document.getElementById('key-forget').addEventListener('click', () => {
  apiKey.set('');
  showKeyState();
});
window.addEventListener('mlxtune:auth', (e) => {
  showKeyState(e.detail.status === 401 ? 'this server needs an API key' : 'this key is not accepted');
  keyInput.focus();
});

function navigate(hash) {
  location.hash = hash;
}

function route() {
  leave();
  const hash = location.hash || '#/';
  const m = hash.match(/^#\/jobs\/([\w-]+)$/);
  if (m) leave = jobPage(view, m[1]);
  else if (hash === '#/new') leave = submitPage(view, navigate);
  else leave = jobsPage(view);
}

window.addEventListener('hashchange', route);
showKeyState();
route();
