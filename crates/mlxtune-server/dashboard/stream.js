// A job's WebSocket: a snapshot, then events. The last event id seen (`ftevent-<n>`, n
// increasing) is kept, and a reconnect asks for `?after=<that id>`, so the stored events missed while away are
// replayed once: no gap, no duplicate. The API key travels as the subprotocol
// `mlxtune.bearer.<key>` beside `mlxtune` (browsers cannot set headers; never in the URL).

import { apiKey } from './api.js';

// The sequence number of an event id `ftevent-<n>`.
const sequence = (id) => Number(id.slice('ftevent-'.length));

export function openJobStream(id, { onMessage, onState }) {
  let last = 0;
  let ws = null;
  let closed = false;
  let retry = 500;
  let timer = null;

  const connect = () => {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${proto}//${location.host}/v1/fine_tuning/jobs/${encodeURIComponent(id)}/stream?after=ftevent-${last}`;
    const key = apiKey.get();
    const protocols = key ? ['mlxtune', `mlxtune.bearer.${key}`] : ['mlxtune'];
    try {
      ws = new WebSocket(url, protocols);
    } catch (e) {
      onState('error', 'this key has characters a WebSocket subprotocol cannot carry');
      return;
    }
    onState('connecting');
    ws.onopen = () => { retry = 500; onState('live'); };
    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch { return; }
      if (typeof msg.id === 'string' && msg.id.startsWith('ftevent-')) {
        if (sequence(msg.id) <= last) return;
        last = sequence(msg.id);
      }
      onMessage(msg);
    };
    ws.onclose = () => {
      ws = null;
      if (closed) return;
      onState('reconnecting');
      timer = setTimeout(connect, retry);
      retry = Math.min(retry * 2, 8000);
    };
  };
  connect();
  return {
    get lastEventId() { return `ftevent-${last}`; },
    /** Drops the connection as a network failure would (the stream reconnects). */
    drop() { if (ws) ws.close(); },
    close() { closed = true; clearTimeout(timer); if (ws) ws.close(); },
  };
}
