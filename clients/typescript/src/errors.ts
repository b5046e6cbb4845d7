/** A failed request: the server's `{"error": {code, message, param}}` with the HTTP status. */
export class MLXTuneError extends Error {
  /** HTTP status; 0 when no response arrived (network failure). */
  readonly status: number;
  /** Stable machine-readable code: `invalid_request`, `not_found`, `unauthorized`, ... */
  readonly code: string;
  /** The offending field's path (e.g. `parameters.learningRate`), when one is to blame. */
  readonly param: string | null;

  constructor(status: number, code: string, message: string, param: string | null = null) {
    super(message);
    this.name = 'MLXTuneError';
    this.status = status;
    this.code = code;
    this.param = param;
  }

  /** Builds the error from a response and its body text (JSON error object or not). */
  static fromResponse(status: number, text: string): MLXTuneError {
    try {
      const e = (JSON.parse(text) as { error?: { code?: string; message?: string; param?: string | null } }).error;
      if (e && typeof e.code === 'string') {
        return new MLXTuneError(status, e.code, e.message ?? '', e.param ?? null);
      }
    } catch {
      // not JSON: fall through
    }
    return new MLXTuneError(status, 'http_error', text.slice(0, 200) || `HTTP ${status}`);
  }
}
