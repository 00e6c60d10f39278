// The tool's logic, natively: `node --import ./native-host.mjs --test`.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { reported } from 'autoglm:plugin/host@0.2.0';
import { InvalidArguments, call } from './autoglm.js';
import { definitions, tools } from './tool.js';

test('greets', () => {
  assert.deepEqual(JSON.parse(call(definitions, 'greet', '{"name": "Ada", "excited": true}')), { greeting: 'Hello, Ada!' });
});

test('bad arguments are invalid', () => {
  for (const args of ['{"name": " "}', '{}', '{"name": 3}', '{"name": "x", "extra": 1}', 'not json']) {
    assert.throws(() => call(definitions, 'greet', args), InvalidArguments, args);
  }
});

test('the export maps errors onto the WIT cases', () => {
  assert.throws(() => tools.call('greet', '{}'), (e) => e.tag === 'invalid-arguments');
  assert.equal(tools.listTools()[0].hints.readOnly, true);
});

test('work reports progress and the context', () => {
  reported.length = 0;
  const worked = JSON.parse(call(definitions, 'work', '{"steps": 2}'));
  assert.equal(worked.idempotency_key, 'native');
  assert.deepEqual(reported, [[1, 2, 'step 1'], [2, 2, 'step 2']]);
});
