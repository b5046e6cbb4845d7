// Generates src/generated/openapi.ts from a real `mlxtune serve`'s /openapi.json with
// openapi-typescript (operation names dropped, see below); with --check, fails if the
// committed file differs from a fresh one.
//   node scripts/openapi.mjs [--check]     (needs target/debug/mlxtune, or MLXTUNE_BIN)

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { startServer } from '../../../tests/support/mlxtune-server.mjs';

const here = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const committed = join(here, 'src/generated/openapi.ts');
const check = process.argv.includes('--check');

const server = await startServer();
const tmp = mkdtempSync(join(tmpdir(), 'mlxtune-openapi-'));
try {
  const doc = await (await fetch(`${server.base}/openapi.json`)).json();
  // utoipa names operations after handler functions, so two modules' `list` or `metrics`
  // collide (duplicate operationIds), which openapi-typescript turns into duplicate
  // identifiers. The client addresses routes by path, so operation names are dropped and
  // each operation's types stay inline under `paths`.
  for (const item of Object.values(doc.paths ?? {})) {
    for (const op of Object.values(item)) if (op && typeof op === 'object') delete op.operationId;
  }
  writeFileSync(join(tmp, 'openapi.json'), JSON.stringify(doc));
  const out = join(tmp, 'openapi.ts');
  execFileSync(join(here, 'node_modules/.bin/openapi-typescript'), [join(tmp, 'openapi.json'), '-o', out], { stdio: 'pipe' });
  const fresh = readFileSync(out, 'utf8');
  if (!check) {
    writeFileSync(committed, fresh);
    console.log(`wrote ${committed}`);
  } else if (readFileSync(committed, 'utf8') !== fresh) {
    writeFileSync(join(here, 'openapi.fresh.ts'), fresh);
    console.error(`${committed} is stale: the server's /openapi.json changed. Run: node scripts/openapi.mjs (diff against openapi.fresh.ts)`);
    process.exitCode = 1;
  } else {
    console.log('src/generated/openapi.ts matches the server\'s /openapi.json');
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
  await server.stop();
}
