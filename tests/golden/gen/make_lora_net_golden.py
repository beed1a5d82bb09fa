#!/usr/bin/python3
"""Goldens for lib/train/lora_net (tests/unit/test_lora_file.c: test_lora_net_*).

Runs the reference's OWN functions: they are extracted with `ast` from kohya-ss/sd-scripts
networks/lora.py (argument 1, default: the local mirror) and executed with small stubs (no
diffusers/transformers here): get_block_index, parse_block_lr_kwargs, get_block_lr_weight,
get_block_dims_and_alphas, remove_block_dims_and_alphas, LoRANetwork.prepare_optimizer_params,
LoRANetwork.apply_max_norm_regularization. Writes tests/data/train/lora_net.txt.
Run by hand with /usr/bin/python3 (torch 1.13).
"""
import ast
import logging
import math
import os
import re
import subprocess
import sys

import torch

SRC = sys.argv[1] if len(sys.argv) > 1 else None
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "train", "lora_net.txt")


def load_source():
    if SRC:
        return open(SRC).read()
    return subprocess.check_output(["git", "-C", "/work/.mirror/kohya-ss+sd-scripts/repo", "show",
                                    "HEAD:networks/lora.py"]).decode()


src = load_source()
tree = ast.parse(src)
want_funcs = {"get_block_index", "parse_block_lr_kwargs", "get_block_lr_weight", "get_block_dims_and_alphas",
              "remove_block_dims_and_alphas"}
want_methods = {"prepare_optimizer_params", "apply_max_norm_regularization", "get_lr_weight",
                "set_block_lr_weight", "set_loraplus_lr_ratio"}
ns = {"re": re, "math": math, "torch": torch, "logger": logging.getLogger("lora"),
      "Optional": object, "List": list, "Dict": dict, "Union": object}
ns["Optional"] = __import__("typing").Optional
ns["List"] = __import__("typing").List
ns["Dict"] = __import__("typing").Dict
ns["Union"] = __import__("typing").Union
methods = {}
for node in tree.body:
    if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "RE_UPDOWN" for t in node.targets):
        exec(compile(ast.Module([node], []), "lora.py", "exec"), ns)
    if isinstance(node, ast.FunctionDef) and node.name in want_funcs:
        exec(compile(ast.Module([node], []), "lora.py", "exec"), ns)
    if isinstance(node, ast.ClassDef) and node.name == "LoRANetwork":
        consts = [n for n in node.body if isinstance(n, ast.Assign)]
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and item.name in want_methods:
                methods[item.name] = item
        body = consts + list(methods.values())
        cls = ast.ClassDef("LoRANetwork", [], [], body, [])
        exec(compile(ast.fix_missing_locations(ast.Module([cls], [])), "lora.py", "exec"), ns)
LoRANetwork = ns["LoRANetwork"]


def hx(v):
    return float(v).hex()


class FakeLoRA(torch.nn.Module):
    def __init__(self, name, down_shape, up_shape, alpha, seed):
        super().__init__()
        self.lora_name = name
        g = torch.Generator().manual_seed(seed)
        self.lora_down = torch.nn.Module()
        self.lora_up = torch.nn.Module()
        self.lora_down.weight = torch.nn.Parameter(torch.randn(*down_shape, generator=g) * 0.5)
        self.lora_up.weight = torch.nn.Parameter(torch.randn(*up_shape, generator=g) * 0.5)
        self.register_buffer("alpha", torch.tensor(alpha))


class FakeNet(LoRANetwork, torch.nn.Module):
    def __init__(self, te, unet):
        torch.nn.Module.__init__(self)
        self.text_encoder_loras = te
        self.unet_loras = unet
        self.tel = torch.nn.ModuleList(te)
        self.unl = torch.nn.ModuleList(unet)
        self.block_lr = False
        self.block_lr_weight = None
        self.loraplus_lr_ratio = None
        self.loraplus_unet_lr_ratio = None
        self.loraplus_text_encoder_lr_ratio = None

    def state_dict(self):  # the network's keys (<lora_name>.lora_down.weight ...), sharing storage
        sd = {}
        for l in self.text_encoder_loras + self.unet_loras:
            sd[l.lora_name + ".lora_down.weight"] = l.lora_down.weight.data
            sd[l.lora_name + ".lora_up.weight"] = l.lora_up.weight.data
            sd[l.lora_name + ".alpha"] = l.alpha
        return sd


NAMES = ["lora_unet_down_blocks_0_attentions_0_proj_in", "lora_unet_down_blocks_1_resnets_1_conv1",
         "lora_unet_down_blocks_2_downsamplers_0_conv", "lora_unet_mid_block_attentions_0_proj_out",
         "lora_unet_up_blocks_0_resnets_2_conv2", "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2",
         "lora_unet_up_blocks_2_upsamplers_0_conv", "lora_unet_conv_in", "lora_te_text_model_encoder_layers_0_mlp_fc1"]
SDXL_NAMES = ["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", "lora_unet_middle_block_2_in_layers_2",
              "lora_unet_output_blocks_8_0_skip_connection", "lora_unet_time_embed_0", "lora_unet_out_2",
              "lora_unet_label_emb_0_0"]

ARGSETS = [
    (False, {"down_lr_weight": "sine", "up_lr_weight": "cosine+.5"}),
    (False, {"down_lr_weight": "1,1,1,1,0,0,,0.5", "mid_lr_weight": "2", "block_lr_zero_threshold": "0.1"}),
    (False, {"up_lr_weight": "linear", "block_dims": ",".join(str(i % 5 + 1) for i in range(25)),
             "conv_dim": "4", "conv_alpha": "2"}),
    (False, {"block_dims": ",".join(str(8) for i in range(25)), "block_alphas": ",".join(str(i) for i in range(25)),
             "conv_block_dims": ",".join(str(i % 3) for i in range(25))}),
    (True, {"down_lr_weight": "reverse_linear+0.25", "mid_lr_weight": "0,1,0", "up_lr_weight": "zeros+1"}),
    (False, {"up_lr_weight": "1,2,3,4,5,6,7,8,9,10,11,12,13,14", "down_lr_weight": "0.5,0.5"}),
]


def main():
    lines = ["# made by make_lora_net_golden.py from networks/lora.py's own functions"]
    for n in NAMES:
        lines.append("blockidx 0 %s %d" % (n, ns["get_block_index"](n, False)))
    for n in SDXL_NAMES:
        lines.append("blockidx 1 %s %d" % (n, ns["get_block_index"](n, True)))
    for ci, (sdxl, kw) in enumerate(ARGSETS):
        lw = ns["parse_block_lr_kwargs"](sdxl, kw)
        bd = ba = cbd = cba = None
        if kw.get("block_dims") is not None or lw is not None:
            conv_dim = int(kw["conv_dim"]) if "conv_dim" in kw else None
            conv_alpha = float(kw.get("conv_alpha", 1.0)) if conv_dim is not None else None
            bd, ba, cbd, cba = ns["get_block_dims_and_alphas"](sdxl, kw.get("block_dims"), kw.get("block_alphas"), 4, 1.0,
                                                               kw.get("conv_block_dims"), kw.get("conv_block_alphas"),
                                                               conv_dim, conv_alpha)
            bd, ba, cbd, cba = ns["remove_block_dims_and_alphas"](sdxl, bd, ba, cbd, cba, lw)
        lines.append("argset %d %d %s" % (ci, int(sdxl), " ".join("%s=%s" % kv for kv in kw.items())))
        lines.append("lrw %d %s" % (ci, " ".join(hx(x) for x in lw) if lw else "-"))
        lines.append("bd %d %s" % (ci, " ".join(str(x) for x in bd) if bd else "-"))
        lines.append("ba %d %s" % (ci, " ".join(hx(x) for x in ba) if ba else "-"))
        lines.append("cbd %d %s" % (ci, " ".join(str(x) for x in cbd) if cbd else "-"))
        lines.append("cba %d %s" % (ci, " ".join(hx(x) for x in cba) if cba else "-"))

    # parameter groups
    te = [FakeLoRA("lora_te_text_model_encoder_layers_0_mlp_fc1", (2, 6), (5, 2), 1.0, 1)]
    un = [FakeLoRA(n, (2, 4), (3, 2), 1.0, 2 + i) for i, n in enumerate(
        ["lora_unet_down_blocks_0_attentions_0_proj_in", "lora_unet_up_blocks_3_attentions_2_proj_out",
         "lora_unet_down_blocks_0_attentions_1_proj_in", "lora_unet_mid_block_attentions_0_proj_out",
         "lora_unet_down_blocks_1_attentions_0_proj_in"])]
    gcases = [
        ("plain", None, None, None, (None, None, 1e-4)),
        ("lrs", None, None, None, (5e-5, 2e-4, 1e-4)),
        ("te0", None, None, None, (0.0, None, 1e-4)),
        ("plus", None, (16.0, None, None), None, (None, None, 1e-4)),
        ("plus_split", None, (None, 4.0, 2.0), None, (3e-5, None, 1e-4)),
        ("blocks", "sine", (None, 8.0, None), None, (None, 1e-3, 1e-4)),
    ]
    for name, lrw, plus, _, (tlr, ulr, dlr) in gcases:
        net = FakeNet(te, un)
        if plus:
            net.loraplus_lr_ratio, net.loraplus_unet_lr_ratio, net.loraplus_text_encoder_lr_ratio = plus
        if lrw:
            net.set_block_lr_weight(ns["parse_block_lr_kwargs"](False, {"down_lr_weight": lrw}))
        params, descs = net.prepare_optimizer_params(tlr, ulr, dlr)
        names = {id(p): n for l in te + un for n, p in
                 ((l.lora_name + ".lora_down.weight", l.lora_down.weight), (l.lora_name + ".lora_up.weight", l.lora_up.weight))}
        lines.append("groups %s %d" % (name, len(params)))
        for pg, d in zip(params, descs):
            lines.append("group %s|%s|%s|%s" % (name, d, hx(pg["lr"]), ",".join(names[id(p)] for p in pg["params"])))

    # max norm
    mods = [FakeLoRA("lora_unet_a", (4, 6), (5, 4), 2.0, 11), FakeLoRA("lora_unet_b", (2, 3, 3, 3), (4, 2, 1, 1), 1.0, 12),
            FakeLoRA("lora_unet_c", (3, 5, 1, 1), (2, 3, 1, 1), 3.0, 13), FakeLoRA("lora_te_d", (2, 4), (2, 2), 0.01, 14)]
    for l in mods:
        lines.append("mninit %s %s" % (l.lora_name, " ".join(hx(x) for x in l.lora_down.weight.flatten().tolist())))
        lines.append("mninitup %s %s" % (l.lora_name, " ".join(hx(x) for x in l.lora_up.weight.flatten().tolist())))
    net = FakeNet([], mods)
    with torch.no_grad():
        ks, mean, mx = net.apply_max_norm_regularization(1.0, "cpu")
    lines.append("maxnorm %d %s %s" % (ks, hx(mean), hx(mx)))
    for l in mods:
        lines.append("mndown %s %s" % (l.lora_name, " ".join(hx(x) for x in l.lora_down.weight.flatten().tolist())))
        lines.append("mnup %s %s" % (l.lora_name, " ".join(hx(x) for x in l.lora_up.weight.flatten().tolist())))
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
