// llama.cpp's prefill and decode speed on one GGUF file, as the engine benchmark's peer:
// the prebuilt CPU binaries node-llama-cpp ships, greedy, a fixed number of new tokens
// whatever the model says (EOS ignored), one sequence.
//
// node measure.mjs MODEL.gguf THREADS PROMPT_TOKENS NEW_TOKENS
// prints one JSON line: {"prefill_tok_s": .., "decode_tok_s": .., "load_s": ..}

import { getLlama } from "node-llama-cpp";

const [model_path, threads, prompt_tokens, new_tokens] = process.argv.slice(2);
if (!new_tokens) {
    console.error("usage: node measure.mjs MODEL.gguf THREADS PROMPT_TOKENS NEW_TOKENS");
    process.exit(2);
}
const threadCount = Number(threads);
const started = performance.now();
const llama = await getLlama({ gpu: false, build: "never", maxThreads: threadCount, logLevel: "error" });
const model = await llama.loadModel({ modelPath: model_path });
const context = await model.createContext({
    contextSize: Number(prompt_tokens) + Number(new_tokens) + 8,
    sequences: 1,
    threads: { ideal: threadCount, min: threadCount },
});
const load_s = (performance.now() - started) / 1000;

// The same prompt length as our side: a fixed English text's tokens, repeated to length.
const text = "The quick brown fox jumps over the lazy dog while the engine counts tokens. ";
let prompt = [];
while (prompt.length < Number(prompt_tokens)) {
    prompt = prompt.concat(model.tokenize(text));
}
prompt = prompt.slice(0, Number(prompt_tokens));

const sequence = context.getSequence();
const t0 = performance.now();
let first = null;
let made = 0;
for await (const _token of sequence.evaluate(prompt, { temperature: 0 })) {
    if (first === null) first = performance.now();
    made += 1;
    if (made >= Number(new_tokens)) break;
}
const end = performance.now();
const prefill_tok_s = prompt.length / ((first - t0) / 1000);
// Decode: every token after the first, which came with the prefill.
const decode_tok_s = (made - 1) / ((end - first) / 1000);
console.log(JSON.stringify({ prefill_tok_s, decode_tok_s, load_s, threads: threadCount }));
await context.dispose();
await model.dispose();
await llama.dispose();
