// Write Open-AutoGLM tools in JavaScript.
//
// `tool({...})` describes one tool with a JSON Schema for its arguments; `plugin(...)`
// turns a list of them into the component's `tools` export. Throw `InvalidArguments`
// when the caller must change its arguments; anything else thrown is reported as a
// tool failure. `context()` and `progress(...)` reach the host that runs the call.

import { context as callContext, reportProgress } from 'autoglm:plugin/host@0.2.0';

/** The caller sent arguments the tool cannot accept. */
export class InvalidArguments extends Error {}

/**
 * What the host knows about the call being run: `idempotencyKey` (the same each time the
 * host runs this call again, e.g. a task's stage after a crash: pass it on to services with
 * side effects so they happen once), `traceId` (or undefined) and `deadlineMs` left.
 */
export function context() {
  const { idempotencyKey, traceId, deadlineMs } = callContext();
  return { idempotencyKey, traceId, deadlineMs: Number(deadlineMs) };
}

/**
 * Tell the caller how far a long call has come: `done` of `total` units (when known), with
 * an optional message. Reports should grow; the host forwards them to callers that asked
 * (MCP progress notifications) and drops them otherwise.
 */
export function progress(done, total = undefined, message = undefined) {
  reportProgress(done, total, message);
}

/** Describe one tool: `run(args)` returns a JSON-serialisable result. */
export function tool({ name, description, schema, run, readOnly = false, destructive = false, idempotent = false, openWorld = false }) {
  if (!/^[a-z0-9_-]{1,64}$/.test(name)) throw new Error(`tool name ${name} must be 1-64 characters of [a-z0-9_-]`);
  return { name, description, schema: { type: 'object', ...schema }, run, hints: { readOnly, destructive, idempotent, openWorld } };
}

function check(schema, args) {
  if (typeof args !== 'object' || args === null || Array.isArray(args)) throw new InvalidArguments('arguments must be a JSON object');
  for (const key of schema.required ?? []) {
    if (!(key in args)) throw new InvalidArguments(`missing required argument ${key}`);
  }
  const types = { string: 'string', boolean: 'boolean', number: 'number', integer: 'number' };
  for (const [key, value] of Object.entries(args)) {
    const property = schema.properties?.[key];
    if (!property) {
      if (schema.additionalProperties === false) throw new InvalidArguments(`unknown argument ${key}`);
      continue;
    }
    const expected = types[property.type];
    if (expected && typeof value !== expected) throw new InvalidArguments(`${key} must be of type ${property.type}`);
    if (property.type === 'integer' && !Number.isInteger(value)) throw new InvalidArguments(`${key} must be an integer`);
  }
}

/** Run tool `name` of `tools` with JSON arguments; returns JSON or throws. */
export function call(tools, name, argsJson) {
  const found = tools.find((t) => t.name === name);
  if (!found) throw new InvalidArguments(`this plugin has no tool ${name}; it offers ${tools.map((t) => t.name).join(', ')}`);
  let args;
  try {
    args = JSON.parse(argsJson);
  } catch (error) {
    throw new InvalidArguments(`arguments are not JSON: ${error.message}`);
  }
  check(found.schema, args);
  return JSON.stringify(found.run(args) ?? null);
}

/** The component's `autoglm:plugin/tools` export for `tools`. */
export function plugin(tools) {
  return {
    listTools() {
      return tools.map((t) => ({
        name: t.name,
        description: t.description,
        inputSchema: JSON.stringify(t.schema),
        outputSchema: undefined,
        capabilities: { directories: [], outboundHosts: [], env: [] },
        hints: t.hints,
      }));
    },
    call(name, argsJson) {
      try {
        return call(tools, name, argsJson);
      } catch (error) {
        const tag = error instanceof InvalidArguments ? 'invalid-arguments' : 'failed';
        throw { tag, val: String(error?.message ?? error) };
      }
    },
  };
}
