// Starts a real `mlxtune serve` for the JavaScript tests (browser and TypeScript client):
// a temp directory holding config/default.toml, the tiny LFM2 fixture under a model root,
// a small chat dataset under a dataset root and the data dir; port 0, read back from the
// server's "mlxtune serving on port N" line. No mocks: the binary is the one cargo built.

import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

const SENTENCES = [
  'The quick brown fox jumps over the lazy dog.',
  'Pack my box with five dozen liquor jugs.',
  'How vexingly quick daft zebras jump!',
  'Sphinx of black quartz, judge my vow.',
];

/** A config for the fixture that trains for `maxSteps` steps (the product document's shape). */
export function tinyConfig(maxSteps = 40, extra = {}) {
  return {
    baseModel: 'lfm2-tiny',
    dataset: { trainingData: 'local://chat.jsonl', validationData: 'local://chat.jsonl', format: 'chat' },
    parameters: { learningRate: 3e-3, batchSize: 2, epochs: 1000, sequenceLength: 64, loraRank: 4, loraAlpha: 8 },
    optimization: { gradientCheckpointing: false, mixedPrecision: 'fp32', appleSiliconOptimized: true },
    maxSteps,
    ...extra,
  };
}

const toml = (s) => JSON.stringify(s);

/**
 * @param {{apiKeys?: string[], streamIntervalMs?: number}} opts
 * @returns {Promise<{base: string, port: number, dir: string, stop: () => Promise<void>}>}
 */
export async function startServer({ apiKeys = [], streamIntervalMs = 100 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'mlxtune-js-'));
  cpSync(join(root, 'tests/fixtures/models/lfm2'), join(dir, 'models/lfm2-tiny'), { recursive: true });
  mkdirSync(join(dir, 'datasets'), { recursive: true });
  mkdirSync(join(dir, 'config'), { recursive: true });
  const chat = SENTENCES.map((s) => JSON.stringify({
    messages: [{ role: 'user', content: 'Say it.' }, { role: 'assistant', content: s }],
  }));
  writeFileSync(join(dir, 'datasets/chat.jsonl'), `${chat.join('\n')}\n`);
  writeFileSync(join(dir, 'config/default.toml'), [
    '[server]', 'host = "127.0.0.1"', 'port = 0', 'max_body_bytes = 65536', 'cors_origins = []',
    `stream_update_interval_ms = ${streamIntervalMs}`,
    '[storage]', `data_dir = ${toml(join(dir, 'data'))}`, 'database_path = ""',
    '[workers]', 'count = 1',
    '[paths]', `model_roots = [${toml(join(dir, 'models'))}]`, `dataset_roots = [${toml(join(dir, 'datasets'))}]`,
    '[auth]', `api_keys = [${apiKeys.map(toml).join(', ')}]`,
    '[models]', 'download = false', '',
  ].join('\n'));
  const bin = process.env.MLXTUNE_BIN || join(root, 'target/debug/mlxtune');
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MLXTUNE__')));
  const child = spawn(bin, ['serve', '--config-dir', join(dir, 'config')], {
    env, stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  const port = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`mlxtune serve did not start:\n${stderr}`)), 60_000);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d) => {
      stderr = (stderr + d).slice(-20_000);
      const m = stderr.match(/mlxtune serving on port (\d+)/);
      if (m) { clearTimeout(timer); ok(Number(m[1])); }
    });
    child.on('exit', (code) => { clearTimeout(timer); fail(new Error(`mlxtune serve exited ${code}:\n${stderr}`)); });
  });
  const exited = new Promise((ok) => child.on('exit', ok));
  // Never leave a server behind, even when the test process dies early.
  const reap = () => child.kill('SIGKILL');
  process.on('exit', reap);
  return {
    base: `http://127.0.0.1:${port}`,
    port,
    dir,
    log: () => stderr,
    async stop() {
      process.off('exit', reap);
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((ok) => setTimeout(ok, 10_000))]);
      if (child.exitCode === null) { child.kill('SIGKILL'); await exited; }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
