// {{name}}: a tool for the Open-AutoGLM host.
import { InvalidArguments, context, plugin, progress, tool } from './autoglm.js';

const greet = tool({
  name: 'greet',
  description: 'Greet someone by name.',
  schema: {
    properties: {
      name: { type: 'string', description: 'Who to greet.' },
      excited: { type: 'boolean', description: 'End with an exclamation mark.' },
    },
    required: ['name'],
    additionalProperties: false,
  },
  readOnly: true,
  idempotent: true,
  run({ name, excited = false }) {
    if (!name.trim()) throw new InvalidArguments('name must not be empty');
    return { greeting: `Hello, ${name.trim()}${excited ? '!' : '.'}` };
  },
});

const work = tool({
  name: 'work',
  description: 'Work through some steps, reporting progress, and say what the host told the call.',
  schema: {
    properties: { steps: { type: 'integer', description: 'How many steps (1 to 100).' } },
    required: ['steps'],
    additionalProperties: false,
  },
  readOnly: true,
  run({ steps }) {
    if (steps < 1 || steps > 100) throw new InvalidArguments('steps must be 1 to 100');
    for (let done = 1; done <= steps; done++) progress(done, steps, `step ${done}`);
    const call = context();
    return { steps, idempotency_key: call.idempotencyKey, trace_id: call.traceId ?? null, deadline_ms: call.deadlineMs };
  },
});

export const definitions = [greet, work];
export const tools = plugin(definitions);
