// Run the tool's logic natively: `node --import ./native-host.mjs --test`. Inside the
// component, `autoglm:plugin/host@0.2.0` is the Open-AutoGLM host; under Node it resolves to
// host-stand-in.js, which records what the tools report.
import { register } from 'node:module';

const standIn = new URL('./host-stand-in.js', import.meta.url).href;
const hooks = `export async function resolve(specifier, context, next) {
  if (specifier === 'autoglm:plugin/host@0.2.0') return { url: ${JSON.stringify(standIn)}, shortCircuit: true };
  return next(specifier, context);
}`;
register(`data:text/javascript,${encodeURIComponent(hooks)}`);
