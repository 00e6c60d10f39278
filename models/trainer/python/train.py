"""LoRA fine-tuning of the demo model with PyTorch and PEFT, on the CPU.

`autoglm-train` (the Rust half, models/trainer/src) generates the conversations from the
real plugins and encodes them with the engine's own tokenizer, so the ids here are exactly
the ids the engine will see; it writes them to DATA/data.jsonl with DATA/meta.json. This
script loads the base GGUF with transformers (dequantized to float32), adds GLM-4's
special tokens as rows after the base's vocabulary, trains LoRA pairs on every projection
and the new rows, and writes the adapter in PEFT's format plus the added rows as
`added_embeddings` (the engine's format for added tokens).

Runs in chunks: a checkpoint every 10 steps, and after --chunk-minutes it stops with exit
status 3; run it again to resume. The result depends only on the seed, not on where the
chunks fell.
"""

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time

import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

PAUSED = 3


def arguments():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="target/train-demo", help="what autoglm-train wrote")
    p.add_argument("--out", default="models/autoglm-demo/adapter", help="the adapter directory")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4, help="peak; warm-up then cosine to a tenth")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank; alpha is twice it")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--chunk-minutes", type=float, default=60)
    return p.parse_args()


def batches(samples, size, steps, seed):
    """Every step's batch: similar lengths together, in an order fixed by the seed."""
    rng = random.Random(seed)
    out = []
    while len(out) < steps:
        order = list(range(len(samples)))
        rng.shuffle(order)
        windows = [sorted(order[i : i + size * 16], key=lambda j: len(samples[j]["ids"]))
                   for i in range(0, len(order), size * 16)]
        epoch = [w[i : i + size] for w in windows for i in range(0, len(w), size)]
        rng.shuffle(epoch)
        out.extend(epoch)
    return out[:steps]


def learning_rate(step, steps, peak):
    warmup = max(steps // 20, 1)
    if step < warmup:
        return peak * (step + 1) / warmup
    done = (step - warmup) / max(steps - warmup, 1)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done)))


def loss_of(model, batch, pad):
    """Mean cross-entropy over the target tokens, the head applied only where they are."""
    width = max(len(s["ids"]) for s in batch) - 1
    inputs = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    rows, targets = [], []
    for n, s in enumerate(batch):
        ids = s["ids"]
        inputs[n, : len(ids) - 1] = torch.tensor(ids[:-1])
        mask[n, : len(ids) - 1] = 1
        for p in range(len(ids) - 1):
            if s["trained"][p + 1]:
                rows.append(n * width + p)
                targets.append(ids[p + 1])
    inner = model.get_base_model()
    hidden = inner.model(input_ids=inputs, attention_mask=mask).last_hidden_state
    picked = hidden.reshape(-1, hidden.shape[-1])[torch.tensor(rows)]
    logits = inner.lm_head(picked).float()
    return torch.nn.functional.cross_entropy(logits, torch.tensor(targets))


def main():
    args = arguments()
    torch.set_num_threads(args.threads)
    meta = json.load(open(os.path.join(args.data, "meta.json")))
    samples = [json.loads(line) for line in open(os.path.join(args.data, "data.jsonl"))]
    base_vocab, added = meta["base_vocab"], meta["added_tokens"]
    new_ids = list(range(base_vocab, base_vocab + len(added)))

    torch.manual_seed(args.seed)
    started = time.time()
    base = meta["base"]
    print(f"loading {base} with transformers (dequantized to float32)", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(base), gguf_file=os.path.basename(base), dtype=torch.float32
    )
    model.resize_token_embeddings(base_vocab + len(added), mean_resizing=False)
    with torch.no_grad():
        # The new tokens start at the mean embedding, as no token in particular.
        embedding = model.get_input_embeddings().weight
        embedding[base_vocab:] = embedding[:base_vocab].mean(0)
    config = LoraConfig(
        r=args.rank,
        lora_alpha=2 * args.rank,
        lora_dropout=0.0,
        target_modules=meta["target_modules"],
        bias="none",
        task_type="CAUSAL_LM",
        trainable_token_indices={"embed_tokens": new_ids},
    )
    model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"loaded in {time.time() - started:.0f} s; {trainable / 1e6:.2f}M trainable parameters",
          file=sys.stderr)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)

    checkpoint = os.path.join(args.data, "torch-checkpoint.pt")
    # A checkpoint resumes only the run it belongs to: same data, same schedule.
    with open(os.path.join(args.data, "data.jsonl"), "rb") as f:
        run = [hashlib.sha256(f.read()).hexdigest(), args.steps, args.seed, args.batch,
               args.lr, args.rank]
    step, log, spent = 0, [], 0.0
    if os.path.exists(checkpoint):
        state = torch.load(checkpoint, weights_only=False)
        if state.get("run") == run:
            model.load_state_dict(state["model"], strict=False)
            optimiser.load_state_dict(state["optimiser"])
            step, log, spent = state["step"], state["log"], state["seconds"]
            print(f"resuming at step {step} of {args.steps}", file=sys.stderr)

    order = batches(samples, args.batch, args.steps, args.seed)
    chunk_started = time.time()
    recent = []
    model.train()
    while step < args.steps:
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr)
        loss = loss_of(model, [samples[i] for i in order[step]], meta["pad"])
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        recent.append(loss.item())
        step += 1
        out_of_time = time.time() - chunk_started >= args.chunk_minutes * 60
        if step % 10 == 0 or step == args.steps or out_of_time:
            seconds = spent + time.time() - chunk_started
            line = (f"step {step} loss {sum(recent) / len(recent):.4f} "
                    f"lr {learning_rate(step - 1, args.steps, args.lr):.2e} elapsed {seconds:.0f}s")
            print(line, file=sys.stderr, flush=True)
            log.append(line)
            recent = []
            trained = {k: v for k, v in model.state_dict().items() if "lora_" in k or "token" in k}
            state = {"run": run, "step": step,
                     "log": log, "seconds": seconds, "model": trained,
                     "optimiser": optimiser.state_dict()}
            torch.save(state, checkpoint + ".partial")
            os.replace(checkpoint + ".partial", checkpoint)
            if out_of_time and step < args.steps:
                print(f"paused at step {step}; run again to resume", file=sys.stderr)
                sys.exit(PAUSED)

    save(model, args, meta, new_ids, log)


def save(model, args, meta, new_ids, log):
    os.makedirs(args.out, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()
               if ".lora_A." in k or ".lora_B." in k}
    with torch.no_grad():
        rows = model.get_input_embeddings()(torch.tensor(new_ids)).detach().contiguous()
    tensors["added_embeddings"] = rows
    save_file(tensors, os.path.join(args.out, "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "r": args.rank,
        "lora_alpha": 2 * args.rank,
        "lora_dropout": 0.0,
        "target_modules": meta["target_modules"],
        "bias": "none",
        "task_type": "CAUSAL_LM",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
    }
    with open(os.path.join(args.out, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, "added_tokens.json"), "w") as f:
        json.dump(meta["added_tokens"], f)
        f.write("\n")
    with open(os.path.join(os.path.dirname(os.path.abspath(args.out)), "train-log.txt"), "w") as f:
        f.write("\n".join(log) + "\n")
    print(f"wrote the adapter to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
