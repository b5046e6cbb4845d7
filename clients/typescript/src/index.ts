export { MLXFineTuningService, type ListOptions, type ServiceOptions } from './service.js';
export { MLXTuneError } from './errors.js';
export { FineTunedModel, type ModelRef } from './models.js';
export {
  UpdateSubscription, eventSequence, type UpdateEvents, type UpdateOptions, type WebSocketFactory, type WebSocketLike,
} from './updates.js';
export type * from './types.js';
