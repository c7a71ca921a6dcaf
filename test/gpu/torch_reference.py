#!/usr/bin/env python3
"""Independent numerics check of m1ts against PyTorch (run on the GPU machine, which has torch + transformers).

  python3 test/gpu/torch_reference.py --model DIR --ids 1,2,3 --ours ours.json [--device cuda] [--dtype float32]

- Llama folders (no mamba_config.json): transformers' LlamaForCausalLM computes the logprobs.
- M1 hybrid folders: a PyTorch re-statement of the M1 layers written from shared/reference/m1-spec.md
  (not from m1ts' code): in_proj split z|x|B|C|dt, x/B repeated in d_state-wide groups, conv on x only,
  Δ = softplus(W_dt δ + 2 b_dt), grouped B/C selective scan with D skip, SiLU(z) gate, no norm before
  out_proj; attention layers with unscaled RoPE.
`ours.json` is the output of `m1 logprobs --json`. Prints one JSON line with the max / mean abs difference.
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors import safe_open


def load_state(folder, device, dtype):
    index = os.path.join(folder, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
    state = {}
    for f in files:
        with safe_open(os.path.join(folder, f), framework="pt", device="cpu") as g:
            for k in g.keys():
                state[k] = g.get_tensor(k).to(device=device, dtype=dtype)
    return state


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, pos, theta):  # x [T, H, Dh], rotate-half, unscaled
    dh = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, dh, 2, device=x.device, dtype=torch.float64) / dh))
    ang = (pos.to(torch.float64)[:, None] * inv[None, :]).to(torch.float32)
    cos, sin = ang.cos()[:, None, :].to(x.dtype), ang.sin()[:, None, :].to(x.dtype)
    x1, x2 = x[..., : dh // 2], x[..., dh // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def mha(u, st, p, cfg):
    T = u.shape[0]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    Dh = cfg.get("head_dim") or cfg["hidden_size"] // H
    qkv = u @ st[p + "in_proj.weight"].T
    q, k, v = qkv.split([H * Dh, Hkv * Dh, Hkv * Dh], dim=-1)
    pos = torch.arange(T, device=u.device)
    q = rope(q.view(T, H, Dh), pos, cfg["rope_theta"])
    k = rope(k.view(T, Hkv, Dh), pos, cfg["rope_theta"])
    v = v.view(T, Hkv, Dh)
    k = k.repeat_interleave(H // Hkv, dim=1)
    v = v.repeat_interleave(H // Hkv, dim=1)
    o = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], is_causal=True)
    return o[0].transpose(0, 1).reshape(T, H * Dh) @ st[p + "out_proj.weight"].T


def mamba1(u, st, p, mc):
    T = u.shape[0]
    Di, Dxb = mc["d_inner"], mc["d_xb"]
    N = mc.get("ssm_cfg", {}).get("d_state", 16)
    R = st[p + "dt_proj.weight"].shape[1]
    r = Di // Dxb
    proj = u @ st[p + "in_proj.weight"].T
    z, xp, bp, c, dlow = proj.split([Di, Dxb, Dxb, Di, R], dim=-1)
    # repeat 16-wide groups: group g reads source group g // r
    x = xp.view(T, Dxb // N, 1, N).expand(T, Dxb // N, r, N).reshape(T, Di)
    B = bp.view(T, Dxb // N, 1, N).expand(T, Dxb // N, r, N).reshape(T, Di // N, N)
    C = c.view(T, Di // N, N)
    w = st[p + "conv1d.weight"]  # [Di, 1, K]
    K = w.shape[-1]
    xc = F.conv1d(F.pad(x.T[None], (K - 1, 0)), w, st.get(p + "conv1d.bias"), groups=Di)[0].T
    xc = F.silu(xc)
    b = st[p + "dt_proj.bias"]
    delta = F.softplus(dlow @ st[p + "dt_proj.weight"].T + b + b)  # the bias really is added twice
    A = -torch.exp(st[p + "A_log"].float())  # [Di, N]
    G = Di // N
    h = torch.zeros(Di, N, device=u.device, dtype=torch.float32)
    ys = []
    Bc = B.float().repeat_interleave(Di // G, dim=1)  # [T, Di, N]: channel c uses group c // N
    Cc = C.float().repeat_interleave(Di // G, dim=1)
    for t in range(T):
        dt = delta[t].float()[:, None]
        h = torch.exp(dt * A) * h + dt * Bc[t] * xc[t].float()[:, None]
        ys.append((h * Cc[t]).sum(-1) + st[p + "D"].float() * xc[t].float())
    y = torch.stack(ys).to(u.dtype) * F.silu(z)
    return y @ st[p + "out_proj.weight"].T


def hybrid_logprobs(folder, ids, device, dtype):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    mc = json.load(open(os.path.join(folder, "mamba_config.json")))
    if mc.get("ssm_cfg", {}).get("ngroups") is not None:
        raise SystemExit("the PyTorch re-statement covers the M1 Mamba-1 layer only")
    st = load_state(folder, device, dtype)
    eps = cfg.get("rms_norm_eps", 1e-5)
    x = st["model.embed_tokens.weight"][torch.tensor(ids, device=device)]
    attn = set(mc["attn_layers"])
    with torch.no_grad():
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            u = rms_norm(x, st[p + "input_layernorm.weight"], eps)
            x = x + (mha(u, st, p + "mha.", cfg) if i in attn else mamba1(u, st, p + "mamba.", mc))
            u = rms_norm(x, st[p + "post_attention_layernorm.weight"], eps)
            x = x + (F.silu(u @ st[p + "mlp.gate_proj.weight"].T) * (u @ st[p + "mlp.up_proj.weight"].T)) @ st[p + "mlp.down_proj.weight"].T
        x = rms_norm(x, st["model.norm.weight"], eps)
        head = st.get("lm_head.weight", st["model.embed_tokens.weight"])
        logits = (x @ head.T).float()
    lp = torch.log_softmax(logits, -1)
    return [lp[i, ids[i + 1]].item() for i in range(len(ids) - 1)]


def llama_logprobs(folder, ids, device, dtype):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(folder, torch_dtype=dtype).to(device).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=device)).logits[0].float()
    lp = torch.log_softmax(logits, -1)
    return [lp[i, ids[i + 1]].item() for i in range(len(ids) - 1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--ours", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    a = ap.parse_args()
    ids = [int(s) for s in a.ids.split(",")]
    dtype = getattr(torch, a.dtype)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    hybrid = os.path.exists(os.path.join(a.model, "mamba_config.json"))
    ref = (hybrid_logprobs if hybrid else llama_logprobs)(a.model, ids, a.device, dtype)
    ours = json.load(open(a.ours))
    assert ours["tokens"] == ids, "ours.json was made for other ids"
    mine = ours["logprobs"][1:]
    diffs = [abs(x - y) for x, y in zip(mine, ref)]
    print(json.dumps({
        "model": a.model, "arch": "m1" if hybrid else "llama", "reference": "pytorch-restatement" if hybrid else "transformers.LlamaForCausalLM",
        "dtype": a.dtype, "tokens": len(ids), "max_abs_diff": max(diffs), "mean_abs_diff": sum(diffs) / len(diffs),
        "ours_first": mine[:4], "ref_first": ref[:4],
    }))


if __name__ == "__main__":
    sys.exit(main())
