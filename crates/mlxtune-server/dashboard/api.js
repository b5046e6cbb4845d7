// HTTP to the service: the API key from sessionStorage as `Authorization: Bearer`, errors
// as ApiError carrying the server's {code, message, param}.

const KEY = 'mlxtune.apiKey';

export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || '',
  set: (k) => (k ? sessionStorage.setItem(KEY, k) : sessionStorage.removeItem(KEY)),
};

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || 'http_error';
    this.param = e.param || null;
  }
}

export async function api(method, path, body) {
  const headers = {};
  const key = apiKey.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!r.ok) {
    const err = new ApiError(r.status, json);
    if (r.status === 401 || r.status === 403) {
      window.dispatchEvent(new CustomEvent('mlxtune:auth', { detail: err }));
    }
    throw err;
  }
  return json;
}

export const jobs = {
  list: (limit = 50) => api('GET', `/v1/fine_tuning/jobs?limit=${limit}`),
  get: (id) => api('GET', `/v1/fine_tuning/jobs/${encodeURIComponent(id)}`),
  create: (config) => api('POST', '/v1/fine_tuning/jobs', config),
  control: (id, action) => api('POST', `/v1/fine_tuning/jobs/${encodeURIComponent(id)}/${action}`),
  checkpoints: (id) => api('GET', `/v1/fine_tuning/jobs/${encodeURIComponent(id)}/checkpoints`),
  metrics: (id) => api('GET', `/v1/fine_tuning/jobs/${encodeURIComponent(id)}/metrics`),
};

export const models = {
  generate: (id, body) => api('POST', `/v1/models/${encodeURIComponent(id)}/generate`, body),
};
