// The product document's `loadFineTunedModel(...)` → `generate(...)`, over `/v1/models`.
import type { GenerateRequest, GenerateResponse, ModelObject } from './types.js';

/** How the service client sends a request (its private transport, shared here). */
export type Requester = <T>(method: string, path: string, body?: unknown) => Promise<T>;

/** Which model to load: a served id (`ft:<base>:<suffix>:<job id>` for a job's result, or a
 *  registered name), or a directory / `.gguf` file under the model roots (registered under
 *  `id`, default the path itself, if it is not already). */
export type ModelRef = { modelId: string } | { modelPath: string; id?: string };

export class FineTunedModel {
  constructor(
    private readonly request: Requester,
    /** The model as the service describes it (kind, lineage, path...). */
    readonly info: ModelObject,
  ) {}

  get id(): string {
    return this.info.id;
  }

  /** Generates from `prompt` (`chat: true` renders it with the model's chat template). */
  generate(opts: GenerateRequest): Promise<GenerateResponse> {
    return this.request('POST', `/v1/models/${encodeURIComponent(this.info.id)}/generate`, opts);
  }
}

export async function loadModel(request: Requester, ref: ModelRef): Promise<FineTunedModel> {
  if ('modelId' in ref) {
    const info = await request<ModelObject>('GET', `/v1/models/${encodeURIComponent(ref.modelId)}`);
    return new FineTunedModel(request, info);
  }
  const id = ref.id ?? ref.modelPath;
  try {
    const info = await request<ModelObject>('POST', '/v1/models', { id, source: ref.modelPath });
    return new FineTunedModel(request, info);
  } catch (e) {
    // Already registered under that id: use it.
    if ((e as { status?: number }).status !== 409) throw e;
    const info = await request<ModelObject>('GET', `/v1/models/${encodeURIComponent(id)}`);
    return new FineTunedModel(request, info);
  }
}
