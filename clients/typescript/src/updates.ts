// A job's live updates over the WebSocket `/v1/fine_tuning/jobs/{id}/stream`: a snapshot,
// then events. The last event id (`ftevent-<n>`, n increasing) is kept and a reconnect asks
// for `?after=<id>`, so events missed while away are replayed exactly once. The API key rides as the subprotocol
// `mlxtune.bearer.<key>` beside `mlxtune` (browsers cannot set headers; never in the URL).
import type { FineTuneJob, JobEvent, Snapshot, TrainingUpdate } from './types.js';

/** The parts of the standard WebSocket this client uses (browsers, Node 22+, `ws`). */
export interface WebSocketLike {
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: unknown) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  close(): void;
}
export type WebSocketFactory = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface UpdateEvents {
  /** Every optimizer step's figures (the product document's real-time update). */
  mlx_training_update: (data: TrainingUpdate, event: JobEvent) => void;
  /** Every event (steps, validation, checkpoints, status changes, messages). */
  event: (event: JobEvent) => void;
  /** The job as it is, on every (re)connect. */
  snapshot: (job: FineTuneJob) => void;
  /** The job reached succeeded, failed or cancelled; the subscription then closes. */
  finished: (status: string) => void;
  /** Connected (`reconnect` true after a drop). */
  open: (info: { reconnect: boolean; after: string }) => void;
  /** The connection dropped; a reconnect follows unless closed. */
  disconnect: () => void;
}

export interface UpdateOptions {
  /**
   * Replay stored events after this event id first (`ftevent-<n>`, or the number n; 0: the
   * job's whole history). Default 0.
   */
  after?: string | number;
  /** Reconnect after a drop (with `?after=` the last id). Default true. */
  reconnect?: boolean;
  /** First reconnect delay in ms, doubled up to `maxDelayMs`. Default 250 / 5000. */
  minDelayMs?: number;
  maxDelayMs?: number;
}

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

/** The sequence number of an event id (`ftevent-<n>` → n; a bare number as itself). */
export function eventSequence(id: string | number): number {
  return typeof id === 'number' ? id : Number(id.replace(/^ftevent-/, ''));
}

export class UpdateSubscription {
  private handlers = new Map<keyof UpdateEvents, Array<(...args: unknown[]) => void>>();
  private ws: WebSocketLike | null = null;
  private last: number;
  private closed = false;
  private delay: number;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private connects = 0;

  constructor(
    private readonly url: string,
    private readonly protocols: string[],
    private readonly Socket: WebSocketFactory,
    private readonly opts: UpdateOptions,
  ) {
    this.last = eventSequence(opts.after ?? 0);
    this.delay = opts.minDelayMs ?? 250;
    queueMicrotask(() => this.connect());
  }

  /** The id of the last event delivered (`ftevent-<n>`); a reconnect continues after it. */
  get lastEventId(): string {
    return `ftevent-${this.last}`;
  }

  on<K extends keyof UpdateEvents>(name: K, fn: UpdateEvents[K]): this {
    const list = this.handlers.get(name) ?? [];
    list.push(fn as unknown as (...args: unknown[]) => void);
    this.handlers.set(name, list);
    return this;
  }

  /** Stops: no more events, no reconnect. */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.ws?.close();
  }

  /** Drops the current connection as a network failure would (it reconnects); for tests. */
  drop(): void {
    this.ws?.close();
  }

  private emit<K extends keyof UpdateEvents>(name: K, ...args: Parameters<UpdateEvents[K]>): void {
    for (const fn of this.handlers.get(name) ?? []) fn(...args);
  }

  private connect(): void {
    if (this.closed) return;
    const sep = this.url.includes('?') ? '&' : '?';
    const ws = new this.Socket(`${this.url}${sep}after=${this.lastEventId}`, this.protocols);
    this.ws = ws;
    const reconnect = this.connects++ > 0;
    ws.onopen = () => {
      this.delay = this.opts.minDelayMs ?? 250;
      this.emit('open', { reconnect, after: this.lastEventId });
    };
    ws.onmessage = (m) => this.receive(String(m.data));
    ws.onerror = () => {};
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closed) return;
      this.emit('disconnect');
      if (this.opts.reconnect === false) return;
      this.timer = setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, this.opts.maxDelayMs ?? 5000);
    };
  }

  private receive(text: string): void {
    if (this.closed) return;
    let msg: Snapshot | JobEvent;
    try {
      msg = JSON.parse(text) as Snapshot | JobEvent;
    } catch {
      return;
    }
    if (msg.type === 'snapshot') {
      this.emit('snapshot', (msg as Snapshot).job);
      return;
    }
    const ev = msg as JobEvent;
    const seq = eventSequence(ev.id);
    if (seq <= this.last) return;
    this.last = seq;
    this.emit('event', ev);
    if (ev.type === 'mlx_training_update' && ev.data) {
      this.emit('mlx_training_update', ev.data as TrainingUpdate, ev);
    }
    const status = ev.type === 'status' ? (ev.data as { status?: string } | null)?.status : undefined;
    if (status && TERMINAL.has(status)) {
      this.emit('finished', status);
      this.close();
    }
  }
}
