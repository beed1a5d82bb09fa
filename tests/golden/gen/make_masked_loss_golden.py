#!/usr/bin/python3
"""Golden values for the masked loss (tests/unit/test_masked_loss.c).

Run once by hand with /usr/bin/python3 (Debian: python3-torch 1.13, python3-numpy):

    /usr/bin/python3 tests/golden/gen/make_masked_loss_golden.py

Our transcription of kohya-ss/sd-scripts @ 48d368fa:
  * the alpha mask of a sample (train_util.BaseDataset.__getitem__ / load_images_and_masks_for_caching):
    alpha.astype(np.float32) / 255.0 at bucket size, flipped with the sample
    (alpha_mask[:, ::-1] for a flipped sample); a sample without one gets ones when another sample
    of the batch has one (the collate step);
  * custom_train_functions.apply_masked_loss: mask [B,1,H,W] →
    F.interpolate(mode="area") to the loss's h×w, loss = loss * mask (no renormalisation);
  * train_network.py's loss: conditional_loss(reduction="none") → apply_masked_loss →
    mean([1,2,3]) → × loss_weights → mean → backward (gradient w.r.t. the prediction).

Cases: mask 11×13 → latent 3×5 (non-integer area bins), mask 24×40 → 3×5 (the 8×8 blocks of a
real bucket); sample 1 flipped, sample 2 without a mask (ones); loss types l2 and huber (constant
schedule, c = 0.1). And cond_mask: the mask value of each red byte 0..255 of a conditioning image.
Writes tests/data/diffusion/masked_loss.json.
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F


def f32(a):
    return [float(np.float32(x)) for x in np.asarray(a, dtype=np.float32).reshape(-1)]


def case(rng, mh, mw, loss_type):
    B, C, h, w = 3, 4, 3, 5
    alpha = rng.integers(0, 256, size=(B, mh, mw)).astype(np.uint8)
    alpha[0, 0, :] = 0
    alpha[0, -1, :] = 255
    has = [1, 1, 0]
    flipped = [0, 1, 0]
    loss_weights = np.array([1.0, 0.5, 1.0], dtype=np.float32)
    pred = rng.standard_normal((B, C, h, w)).astype(np.float32)
    target = rng.standard_normal((B, C, h, w)).astype(np.float32)

    masks = []
    for b in range(B):
        if has[b]:
            m = alpha[b].astype(np.float32) / 255.0
            if flipped[b]:
                m = m[:, ::-1].copy()
            masks.append(torch.FloatTensor(m))
        else:
            masks.append(torch.ones((mh, mw), dtype=torch.float32))
    alpha_masks = torch.stack(masks)

    p = torch.tensor(pred, requires_grad=True)
    t = torch.tensor(target)
    if loss_type == "l2":
        loss = F.mse_loss(p, t, reduction="none")
    else:
        hc = torch.full((B,), 0.1, dtype=torch.float32).view(-1, 1, 1, 1)
        loss = 2 * hc * (torch.sqrt((p - t) ** 2 + hc**2) - hc)
    mask_image = alpha_masks.to(dtype=loss.dtype).unsqueeze(1)
    mask_image = F.interpolate(mask_image, size=loss.shape[2:], mode="area")
    loss = loss * mask_image
    loss = loss.mean([1, 2, 3])
    loss = loss * torch.tensor(loss_weights)
    per_sample = loss.detach().clone()
    total = loss.mean()
    total.backward()
    return {
        "B": B, "C": C, "h": h, "w": w, "mh": mh, "mw": mw, "loss_type": loss_type,
        "alpha": [int(x) for x in alpha.reshape(-1)], "has": has, "flipped": flipped,
        "loss_weights": f32(loss_weights), "pred": f32(pred), "target": f32(target),
        "mask": f32(mask_image.detach().numpy()), "per_sample": f32(per_sample.numpy()),
        "loss": float(total.item()), "grad": f32(p.grad.numpy()),
    }


def cond_mask_values():
    """The mask of a conditioning image (ControlNetDataset.__getitem__ + apply_masked_loss): the
    image through IMAGE_TRANSFORMS (torchvision ToTensor: uint8 → float32 .div(255); Normalize([0.5],
    [0.5]): .sub_(mean).div_(std) with [C,1,1] tensors), then channel R, mask / 2 + 0.5, for every
    byte value (torchvision is not installed: its two steps transcribed)."""
    img = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    t = torch.from_numpy(img).permute(2, 0, 1).contiguous().to(dtype=torch.float32).div(255)
    mean = torch.as_tensor([0.5], dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor([0.5], dtype=torch.float32).view(-1, 1, 1)
    t = t.sub_(mean).div_(std)
    cond = torch.stack([t]).to(memory_format=torch.contiguous_format).float()
    m = cond.to(dtype=torch.float32)[:, 0].unsqueeze(1)
    m = m / 2 + 0.5
    return f32(m.numpy())


def main():
    rng = np.random.default_rng(20261127)
    out = {"cases": [case(rng, 11, 13, "l2"), case(rng, 24, 40, "l2"), case(rng, 11, 13, "huber")],
           "cond_mask": cond_mask_values()}
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "diffusion")
    path = os.path.join(root, "masked_loss.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
