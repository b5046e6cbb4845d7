// Friendly names for the generated schema types (src/generated/openapi.ts, from the
// server's /openapi.json by openapi-typescript; regenerate, never edit by hand).
import type { components, paths } from './generated/openapi.js';

type S = components['schemas'];

export type { components, paths };
export type FineTuneJob = S['Job'];
export type JobStatus = S['JobStatus'];
export type JobList = S['JobList'];
export type JobEvent = S['JobEvent'];
export type EventList = S['EventList'];
export type MetricsList = S['MetricsList'];
export type StepMetrics = S['StepMetrics'];
export type Checkpoint = S['Checkpoint'];
export type CheckpointList = S['CheckpointList'];
export type TrainingUpdate = S['TrainingUpdate'];
export type Snapshot = S['Snapshot'];
export type ErrorBody = S['ErrorBody'];
export type Deleted = S['Deleted'];
/** The training config (the product document's `MLXFineTuneConfig` plus extensions). */
export type MLXFineTuneConfig = S['FineTuneConfig'];
export type ModelObject = S['ModelObject'];
export type ModelList = S['ModelList'];
export type GenerateRequest = S['GenerateRequest'];
export type GenerateResponse = S['GenerateResponse'];
