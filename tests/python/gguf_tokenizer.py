"""Write the tokenizer.json that transformers makes from a GGUF's metadata: an independent
reference for the engine's own builder (host/engine/src/gguf/vocab.rs).

    gguf_tokenizer.py IN.gguf OUT.json [IN.gguf OUT.json ...]

The metadata is read with llama.cpp's own `gguf` package and handed to transformers'
`convert_gguf_tokenizer`, as `AutoTokenizer.from_pretrained(..., gguf_file=...)` does (its
GGUF reader needs PyTorch, which this environment does without).
"""

import sys

import gguf
from transformers.integrations.gguf import gguf_tokenizer_mapping as mapping

# llama.cpp reads `glm4` and `chatglm-bpe` with its CHATGLM4 pre-tokenizer, whose split is
# Llama 3's (GLM-4's own tokenizer.json has the same regex). This transformers release does
# not list those names and would fall back to GPT-2's split; give it the regex it already
# has for Llama 3.
for name in ("glm4", "chatglm-bpe"):
    mapping.GGUF_PRE_TOKENIZER_SPLITS.setdefault(name, mapping._LLAMA3_SPLIT)


def convert(source, target):
    reader = gguf.GGUFReader(source)
    metadata = {name: field.contents() for name, field in reader.fields.items()}
    renames = mapping.GGUF_TOKENIZER_MAPPING["tokenizer"]
    tokenizer = {
        name: metadata[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in metadata
    }
    backend, _ = mapping.convert_gguf_tokenizer(metadata["general.architecture"], tokenizer)
    backend.save(target)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if not arguments or len(arguments) % 2:
        sys.exit(__doc__)
    for source, target in zip(arguments[::2], arguments[1::2]):
        convert(source, target)
