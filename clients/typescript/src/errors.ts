import type { ErrorBody } from './types.js';

/** A failed request: the server's `{"error": {code, message, param}}` with the HTTP status. */
export class MLXTuneError extends Error {
  /** HTTP status; 0 when no response arrived (network failure). */
  readonly status: number;
  /** Stable machine-readable code: `invalid_request`, `not_found`, `unauthorized`, ... */
  readonly code: string;
  /** The offending field's path (e.g. `parameters.learningRate`), when one is to blame. */
  readonly param: string | null;
  /** OpenAI's class of the failure (`invalid_request_error`, `authentication_error`,
   *  `permission_error`, `not_found_error`, `server_error`); null without a response. */
  readonly type: string | null;

  constructor(status: number, code: string, message: string, param: string | null = null, type: string | null = null) {
    super(message);
    this.name = 'MLXTuneError';
    this.status = status;
    this.code = code;
    this.param = param;
    this.type = type;
  }

  /** Builds the error from a response and its body text (JSON error object or not). */
  static fromResponse(status: number, text: string): MLXTuneError {
    try {
      const e = (JSON.parse(text) as ErrorBody).error;
      if (e && typeof e.code === 'string') {
        return new MLXTuneError(status, e.code, e.message ?? '', e.param ?? null, e.type ?? null);
      }
    } catch {
      // not JSON: fall through
    }
    return new MLXTuneError(status, 'http_error', text.slice(0, 200) || `HTTP ${status}`);
  }
}
