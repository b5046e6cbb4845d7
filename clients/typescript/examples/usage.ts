// The usage of docs/clients.md, type-checked (never run) by scripts/test-js.sh:
// `tsc -p tsconfig.examples.json` fails if the client's types drift from the docs.
import { MLXFineTuningService, MLXTuneError, type TrainingUpdate } from '../src/index.js';

export async function example(apiKey?: string): Promise<void> {
  const mlxService = new MLXFineTuningService({ baseUrl: 'http://127.0.0.1:8080', apiKey });
  try {
    const job = await mlxService.startFineTuning({
      baseModel: 'LFM2-1.2B',
      dataset: { trainingData: 'local://train.jsonl', validationData: 'local://valid.jsonl', format: 'chat' },
      parameters: { learningRate: 2e-4, batchSize: 8, epochs: 3, sequenceLength: 2048, loraRank: 16, loraAlpha: 32 },
      optimization: { gradientCheckpointing: true, mixedPrecision: 'bf16', appleSiliconOptimized: true },
    });

    const updates = mlxService.onUpdate(job.id, (data: TrainingUpdate) => {
      console.log(`Epoch: ${data.epoch}/${data.total_epochs}`);
      console.log(`Loss: ${data.current_loss}  LR: ${data.learning_rate}`);
      console.log(`GPU Memory: ${data.gpu_memory_used}/${data.gpu_memory_total}`);
      console.log(`Tokens/Second: ${data.tokens_per_second}`);
    });
    updates.on('finished', (status) => console.log(`job ${status}`));

    const status = await mlxService.getJobStatus(job.id);
    console.log(`Progress: ${status.progress.completion_percentage}%`);

    const done = await mlxService.getJobStatus(job.id);
    const model = await mlxService.loadFineTunedModel({ modelId: done.fine_tuned_model! });
    const { text, finishReason, usage } = await model.generate({ prompt: 'Name three rivers.', maxTokens: 64, temperature: 0.7, chat: true });
    console.log(text, finishReason, usage.completion_tokens);
    const base = await mlxService.loadFineTunedModel({ modelPath: 'LFM2-1.2B', id: 'lfm2' });
    console.log(base.info.kind);
  } catch (e) {
    if (e instanceof MLXTuneError) console.error(e.status, e.code, e.param, e.message);
    else throw e;
  }
}
