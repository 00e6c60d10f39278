// {{name}}: a tool for the Open-AutoGLM host.
import { InvalidArguments, plugin, tool } from './autoglm.js';

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

export const definitions = [greet];
export const tools = plugin(definitions);
