// The product document's MLXFineTuningService over the job service's REST API.
import { MLXTuneError } from './errors.js';
import type {
  CheckpointList, Deleted, EventList, FineTuneJob, JobList, JobStatus, MetricsList,
  MLXFineTuneConfig, TrainingUpdate,
} from './types.js';
import { loadModel, type FineTunedModel, type ModelRef } from './models.js';
import { UpdateSubscription, type UpdateOptions, type WebSocketFactory } from './updates.js';

export interface ServiceOptions {
  /** The service's address, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** Sent as `Authorization: Bearer` (and as a WebSocket subprotocol) when set. */
  apiKey?: string;
  /** Defaults to the global `fetch`. */
  fetch?: typeof fetch;
  /** Defaults to the global `WebSocket` (browsers, Node 22+); pass `ws`'s on Node 20. */
  WebSocket?: WebSocketFactory;
}

export interface ListOptions {
  /** A job id: the page after it (newest first). */
  after?: string;
  limit?: number;
  status?: JobStatus;
}

export class MLXFineTuningService {
  private readonly base: string;
  private readonly key: string | undefined;
  private readonly fetchFn: typeof fetch;
  private readonly Socket: WebSocketFactory | undefined;

  constructor(opts: ServiceOptions) {
    this.base = opts.baseUrl.replace(/\/+$/, '');
    this.key = opts.apiKey;
    this.fetchFn = opts.fetch ?? globalThis.fetch.bind(globalThis);
    this.Socket = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketFactory }).WebSocket;
  }

  /** Validates and queues a job; a bad field is an `MLXTuneError` with status 422 and `param`. */
  startFineTuning(config: MLXFineTuneConfig): Promise<FineTuneJob> {
    return this.request('POST', '/v1/fine_tuning/jobs', config);
  }

  /** The job now: `status`, `progress.completion_percentage`, `latest_metrics`, `error`... */
  getJobStatus(id: string): Promise<FineTuneJob> {
    return this.request('GET', `/v1/fine_tuning/jobs/${enc(id)}`);
  }

  listJobs(opts: ListOptions = {}): Promise<JobList> {
    const q = new URLSearchParams();
    if (opts.after) q.set('after', opts.after);
    if (opts.limit !== undefined) q.set('limit', String(opts.limit));
    if (opts.status) q.set('status', opts.status);
    const qs = q.toString();
    return this.request('GET', `/v1/fine_tuning/jobs${qs ? `?${qs}` : ''}`);
  }

  cancel(id: string): Promise<FineTuneJob> {
    return this.request('POST', `/v1/fine_tuning/jobs/${enc(id)}/cancel`);
  }

  /** Running → checkpoint → paused (the worker is freed). */
  pause(id: string): Promise<FineTuneJob> {
    return this.request('POST', `/v1/fine_tuning/jobs/${enc(id)}/pause`);
  }

  /** Paused → queued; continues from the checkpoint. */
  resume(id: string): Promise<FineTuneJob> {
    return this.request('POST', `/v1/fine_tuning/jobs/${enc(id)}/resume`);
  }

  /** Finished jobs only; removes their files. */
  deleteJob(id: string): Promise<Deleted> {
    return this.request('DELETE', `/v1/fine_tuning/jobs/${enc(id)}`);
  }

  /** Events in order; page with `after` (an event id). */
  events(id: string, opts: { after?: string | number; limit?: number } = {}): Promise<EventList> {
    const q = new URLSearchParams();
    if (opts.after !== undefined) q.set('after', String(opts.after));
    if (opts.limit !== undefined) q.set('limit', String(opts.limit));
    const qs = q.toString();
    return this.request('GET', `/v1/fine_tuning/jobs/${enc(id)}/events${qs ? `?${qs}` : ''}`);
  }

  /** Every step's metrics, in step order. */
  metrics(id: string): Promise<MetricsList> {
    return this.request('GET', `/v1/fine_tuning/jobs/${enc(id)}/metrics`);
  }

  checkpoints(id: string): Promise<CheckpointList> {
    return this.request('GET', `/v1/fine_tuning/jobs/${enc(id)}/checkpoints`);
  }

  /**
   * A model to generate with: `{modelId}` (a succeeded job's `fine_tuned_model`, or any
   * registered id) or `{modelPath}` (registered first). `.generate({prompt, maxTokens,
   * temperature})` answers `{text, finishReason, usage}`.
   */
  loadFineTunedModel(ref: ModelRef): Promise<FineTunedModel> {
    return loadModel((m, p, b) => this.request(m, p, b), ref);
  }

  /**
   * Live updates of a job: `handler` gets each `mlx_training_update`; the returned
   * subscription emits the other events too (`.on('event' | 'snapshot' | 'finished' ...)`),
   * reconnects after drops with `?after=<last event id>` (no gap, no duplicate) and closes
   * itself when the job finishes.
   */
  onUpdate(
    id: string,
    handler?: (data: TrainingUpdate) => void,
    opts: UpdateOptions = {},
  ): UpdateSubscription {
    if (!this.Socket) {
      throw new MLXTuneError(0, 'no_websocket', 'no WebSocket: pass `WebSocket` (e.g. from the `ws` package) in the options');
    }
    const url = `${this.base.replace(/^http/, 'ws')}/v1/fine_tuning/jobs/${enc(id)}/stream`;
    const protocols = this.key ? ['mlxtune', `mlxtune.bearer.${this.key}`] : ['mlxtune'];
    const sub = new UpdateSubscription(url, protocols, this.Socket, opts);
    if (handler) sub.on('mlx_training_update', handler);
    return sub;
  }

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.key) headers.Authorization = `Bearer ${this.key}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let r: Response;
    try {
      r = await this.fetchFn(`${this.base}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new MLXTuneError(0, 'network_error', e instanceof Error ? e.message : String(e));
    }
    const text = await r.text();
    if (!r.ok) throw MLXTuneError.fromResponse(r.status, text);
    return JSON.parse(text) as T;
  }
}

const enc = encodeURIComponent;
