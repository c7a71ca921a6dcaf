#!/usr/bin/env python3
"""Peer for bench:decode: PyTorch + transformers decoding the Llama-3.2-3B shape on the same GPU.

  python3 bench/torch_decode.py --config DIR/config.json --batches 8,64,128 --contexts 256,1024 --steps 8 --out FILE.json

Random bf16 weights (the values do not change the speed), SDPA attention, a StaticCache sized to the
context, greedy next token by argmax on the device; the model's forward is wrapped in torch.compile
(mode "reduce-overhead" = CUDA graphs) when --compile is given. Step time is measured like our
bench/decode.ts: sequences at context L, the mean over --steps decode steps after two warm-up steps
(three with --compile: compile, graph recording, first replay).
"""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, StaticCache


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batches", default="8,64,128")
    ap.add_argument("--contexts", default="256,1024")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cfg = LlamaConfig.from_pretrained(a.config)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    if a.compile:
        # one static graph per batch size (no dynamic-shape fallback after the second shape), CUDA graphs on
        torch._dynamo.config.automatic_dynamic_shapes = False
        torch._dynamo.config.cache_size_limit = 64
    fwd = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True) if a.compile else model.forward
    warm = 3 if a.compile else 2
    results = []
    for B in [int(x) for x in a.batches.split(",")]:
        for L in [int(x) for x in a.contexts.split(",")]:
            try:
                cache = StaticCache(config=cfg, max_batch_size=B, max_cache_len=L + a.steps + 4, device="cuda", dtype=torch.bfloat16)
                ids = torch.randint(0, cfg.vocab_size, (B, L), device="cuda")
                with torch.no_grad():
                    pos = torch.arange(L, device="cuda")
                    out = model(input_ids=ids, past_key_values=cache, cache_position=pos, use_cache=True)
                    nxt = out.logits[:, -1:].argmax(-1)
                    del out
                    times = []
                    for k in range(a.steps + warm):
                        torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        cp = torch.tensor([L + k], device="cuda")
                        logits = fwd(input_ids=nxt, past_key_values=cache, cache_position=cp, use_cache=True).logits
                        nxt = logits[:, -1:].argmax(-1)
                        torch.cuda.synchronize()
                        times.append(time.perf_counter() - t0)
                step = sum(times[warm:]) / len(times[warm:])
                r = {"batch": B, "context": L, "stepMs": step * 1000, "tokensPerS": B / step, "firstCallS": times[0]}
            except torch.cuda.OutOfMemoryError:
                r = {"batch": B, "context": L, "oom": True}
            torch.cuda.empty_cache()
            print(json.dumps(r), flush=True)
            results.append(r)
    json.dump({"peer": "transformers LlamaForCausalLM, bf16, SDPA, StaticCache" + (", torch.compile reduce-overhead" if a.compile else ", eager"),
               "torch": torch.__version__, "points": results}, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
