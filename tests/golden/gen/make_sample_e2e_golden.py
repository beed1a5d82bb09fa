#!/usr/bin/python3
"""End-to-end golden of the reference's sample-image pipeline on the tiny SD1 model of
tests/unit/test_sample.c (golden UNet sd1_tiny, VAE golden_vae_a, CLIP golden_clip_sd1 with its
token table widened to 49408 rows by the same rule as the C helper's make-model):

  lpw_stable_diffusion.py text conditioning (rows from make_sample_lpw_golden.rows, the reference's
  functions verbatim; CLIP per chunk; weights with the mean rescaling) -> torch.cat([uncond, cond])
  -> DDIM (diffusers DDIMScheduler.step maths with kohya's settings: 1000 train steps,
  scaled-linear betas, "leading" spacing, steps_offset 0, set_alpha_to_one, clip_sample forced on,
  eta 0) with classifier-free guidance -> 1/0.18215 * latents -> VAE decode ->
  (x/2+0.5).clamp(0,1) -> round(x*255) (numpy_to_pil).

The initial noise x_T is ours (Philox streams keyed by the seeds), taken from the C helper so that
the golden checks everything after it:

    make BUILD=build tests   # builds build/tests/unit/test_sample
    /usr/bin/python3 tests/golden/gen/make_sample_e2e_golden.py build/tests/unit/test_sample

Writes tests/data/sample/e2e_golden.safetensors (x_T, final latents, pixels as f32 0..255).
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..", "..")
sys.path.insert(0, HERE)
import make_sample_lpw_golden as lpw  # noqa: E402  (installs the ftfy stand-in)
import clip_tokenizer_ref  # noqa: E402
import make_unet_golden  # noqa: E402
import make_vae_golden  # noqa: E402
import make_clip_golden  # noqa: E402

OUT = os.path.join(ROOT, "tests", "data", "sample", "e2e_golden.safetensors")

PROMPT = "a (photo:1.2) of a [cat], sitting"
NEG = "blurry, (ugly:1.3)"
SEEDS = [11, 12]
W = H = 32
STEPS = 3
SCALE = 7.5


def load_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        dt = {"F32": np.float32, "F16": np.float16, "I32": np.int32}[v["dtype"]]
        a = np.frombuffer(b[8 + n + s:8 + n + e], dtype=dt).reshape(v["shape"])
        out[k] = torch.from_numpy(a.astype(np.float32) if dt != np.int32 else a.copy())
    return out


def strip(sd, prefix):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def models():
    g = os.path.join(ROOT, "tests", "data", "golden")
    unet = make_unet_golden.UNetModel(**make_unet_golden.CONFIGS["sd1_tiny"]["cfg"])
    unet.load_state_dict(strip(load_st(os.path.join(g, "unet", "sd1_tiny.safetensors")), "model.diffusion_model."))
    vae = make_vae_golden.AutoencoderKL(dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=[], in_channels=3,
                                             resolution=32, z_channels=4, double_z=True), 4)
    vae.load_state_dict(strip(load_st(os.path.join(g, "vae", "golden_vae_a.safetensors")), "first_stage_model."))
    make_clip_golden.VOCAB = 49408
    clip = make_clip_golden.CLIPTextModel(32, 3, 2, make_clip_golden.quick_gelu)
    sd = strip(load_st(os.path.join(g, "clip", "golden_clip_sd1.safetensors")), "cond_stage_model.transformer.")
    tok = sd["text_model.embeddings.token_embedding.weight"]
    V = tok.shape[0]
    r = torch.arange(49408)
    scale = 1.0 + (r // V).to(torch.float32) / 64.0
    sd["text_model.embeddings.token_embedding.weight"] = tok[r % V] * scale[:, None]
    clip.load_state_dict(sd)
    return unet.eval(), vae.eval(), clip.eval()


def encode(clip, ids, weights, k):
    """get_unweighted_text_embeddings (no clip_skip) per chunk + the weighting of
    get_weighted_text_embeddings."""
    ids = torch.tensor(ids, dtype=torch.long).reshape(k, 77)
    last, _ = clip.text_model(ids)
    emb = last.reshape(1, k * 77, -1)
    w = torch.tensor(weights, dtype=torch.float32).reshape(1, k * 77)
    previous_mean = emb.float().mean(axis=[-2, -1])
    emb = emb * w.unsqueeze(-1)
    current_mean = emb.float().mean(axis=[-2, -1])
    emb = emb * (previous_mean / current_mean).unsqueeze(-1).unsqueeze(-1)
    return emb


def ddim(unet, ctx, x, steps, scale):
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    ac = torch.cumprod(1.0 - betas, dim=0)
    ratio = 1000 // steps
    timesteps = (np.arange(0, steps) * ratio).round()[::-1].copy().astype(np.int64)
    guided = scale > 1.0
    for t in timesteps:
        inp = torch.cat([x] * 2) if guided else x
        tt = torch.full((inp.shape[0],), float(t), dtype=torch.float32)
        out = unet(inp, tt, ctx)
        if guided:
            u, c = out.chunk(2)
            out = u + scale * (c - u)
        prev = t - ratio
        a_t = ac[t]
        a_prev = ac[prev] if prev >= 0 else torch.tensor(1.0)
        b_t = 1 - a_t
        x0 = (x - b_t ** 0.5 * out) / a_t ** 0.5
        x0 = x0.clamp(-1.0, 1.0)
        x = a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * out
    return x


def to_pixels(vae, lat):
    img = vae.decode(1 / 0.18215 * lat)
    img = (img / 2 + 0.5).clamp(0, 1)
    img = img.permute(0, 2, 3, 1).float().numpy()
    return torch.from_numpy(np.round(img * 255).astype(np.float32))


def main():
    helper = sys.argv[1]
    unet, vae, clip = models()
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "xT.bin")
        subprocess.check_call([helper, "initial-noise", ",".join(map(str, SEEDS)), "4", str(H // 2), str(W // 2), p])
        xT = torch.from_numpy(np.fromfile(p, dtype=np.float32).reshape(len(SEEDS), 4, H // 2, W // 2).copy())
    tok = clip_tokenizer_ref.Oracle()
    (pi, pw, k), (ni, nw, _) = lpw.rows(tok, PROMPT, NEG, lpw.EOS)
    with torch.no_grad():
        cond = encode(clip, pi, pw, k)
        uncond = encode(clip, ni, nw, k)
        B = len(SEEDS)
        ctx = torch.cat([uncond.repeat(B, 1, 1), cond.repeat(B, 1, 1)])
        lat = ddim(unet, ctx, xT.clone(), STEPS, SCALE)
        pix = to_pixels(vae, lat)
        # no guidance: the prompt alone (the reference does not encode the negative prompt then)
        (pi1, pw1, k1), _ = lpw.rows(tok, PROMPT, "", lpw.EOS)
        cond1 = encode(clip, pi1, pw1, k1)
        lat1 = ddim(unet, cond1, xT[:1].clone(), STEPS, 1.0)
        pix1 = to_pixels(vae, lat1)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    make_unet_golden.write_safetensors(OUT, {"xT": xT, "latents": lat, "pixels": pix, "latents_nocfg": lat1,
                                             "pixels_nocfg": pix1})
    print("wrote", OUT, "pixel range", float(pix.min()), float(pix.max()), "mean", float(pix.mean()))


if __name__ == "__main__":
    main()
