#!/usr/bin/env bash
# sd-model extract-dylora (networks/extract_lora_from_dylora.py): a rank-8 DyLoRA (unit 2, conv_dim 8,
# fp16) trained by sd-train on the tiny SD1 model cut into ranks 2, 4 and 6 (not 8: the reference stops
# below the largest rank) named OUT-0002.safetensors ...; checked with numpy (Debian's /usr/bin/python3):
# every lora_down keeps its first rows, every lora_up its first columns, alpha and the dtype unchanged,
# the same keys; the metadata is the source's with ss_training_comment "split from DyLoRA, rank 8 to N;
# <comment>" and ss_network_dim N, and sshs_model_hash is the file's own; sd-sample loads a result; bad
# input: one line, exit 1 or 2, no file.
. "$(dirname "$0")/lib.sh"
t_init sd_model_extract_dylora extract_dylora
B="$root/$build/bin/sd-model" TR="$root/$build/bin/sd-train"
PY=/usr/bin/python3
t_need "$B" "$TR"
t_tiny_build
cd "$tmp"
export SOURCE_DATE_EPOCH=1700000000 SD_PROGRESS=0
C1="$root/examples/tiny_model.toml"
./tiny_model model tiny.safetensors "$C1" > /dev/null && ./tiny_model latents "$tmp" 4 4 8 8 > recs.jsonl ||
  { nok extract_dylora_tiny_model; exit 1; }
"$TR" --method lora --data recs.jsonl --learning_rate 5e-2 --network_dim 8 --network_alpha 4 --threads 1 \
  --max_train_steps 4 --output_dir a --model tiny.safetensors --model_config "$C1" --seed 3 --output_name A \
  --network_module networks.dylora --network_args unit=2 conv_dim=8 --save_precision fp16 \
  --training_comment "tiny run" 2> a.err || { nok extract_dylora_train "$(tail -2 a.err)"; exit 1; }
mkdir out
"$B" extract-dylora --model a/A.safetensors --save_to out/S.safetensors --unit 2 2> x.err && ok extract_dylora_runs ||
  nok extract_dylora_runs "$(tail -2 x.err)"
[ "$(cd out && ls)" = "$(printf 'S-0002.safetensors\nS-0004.safetensors\nS-0006.safetensors')" ] &&
  ok extract_dylora_files || nok extract_dylora_files "$(ls out)"

if ! $PY -c 'import numpy' 2> /dev/null; then
  echo "ok extract_dylora_numpy # SKIP $PY has no numpy"
else
  cat > check.py <<'PY'
import hashlib, os, sys
import numpy as np
sys.path.insert(0, os.environ['ST_LOAD_DIR']); import st_load
def load(p):
    h, meta, d = st_load.read(p)
    return {k: (t['dtype'], st_load.array(h, d, k)) for k, t in h.items()}, meta, hashlib.sha256(d).hexdigest()
src, smeta, _ = load(sys.argv[1])
for rank in (2, 4, 6):
    out, meta, h = load(f"{sys.argv[2]}-{rank:04d}.safetensors")
    assert sorted(out) == sorted(src), "keys"
    for k, (dt, v) in src.items():
        odt, o = out[k]
        assert odt == dt, (k, dt, odt)
        want = v[:rank] if 'lora_down' in k else v[:, :rank] if 'lora_up' in k else v
        assert o.shape == want.shape and np.array_equal(o, want), k
    for k, v in smeta.items():
        if k == 'ss_training_comment': assert meta[k] == f"split from DyLoRA, rank 8 to {rank}; {v}", meta[k]
        elif k == 'ss_network_dim': assert meta[k] == str(rank), meta[k]
        elif not k.startswith('sshs_'): assert meta[k] == v, k
    assert meta['sshs_model_hash'] == h, "sshs_model_hash is not the file's"
print("ok")
PY
  [ "$($PY check.py a/A.safetensors out/S 2>&1)" = ok ] && ok extract_dylora_numpy ||
    nok extract_dylora_numpy "$($PY check.py a/A.safetensors out/S 2>&1 | tail -2)"
fi
# a result is a LoRA file sd-model merges
"$B" merge --sd_model tiny.safetensors --model_config "$C1" --models out/S-0004.safetensors --ratios 1 \
  --save_to merged.safetensors 2> m.err && ok extract_dylora_result_merges || nok extract_dylora_result_merges "$(tail -2 m.err)"
# unit 8 (or more): nothing below the largest rank
"$B" extract-dylora --model a/A.safetensors --save_to out2.safetensors --unit 8 2> u8.err && [ ! -e out2-0008.safetensors ] &&
  grep -q 'no file written' u8.err && ok extract_dylora_unit_max || nok extract_dylora_unit_max "$(cat u8.err)"

X() { "$B" extract-dylora "$@"; }
expect_fail X extract_dylora_no_unit 2 'unit' --model a/A.safetensors --save_to e.safetensors
expect_fail X extract_dylora_no_model 2 'model' --save_to e.safetensors --unit 2
expect_fail X extract_dylora_no_save_to 2 'save_to' --model a/A.safetensors --unit 2
expect_fail X extract_dylora_ckpt_out 2 'only .safetensors' --model a/A.safetensors --save_to e.ckpt --unit 2
expect_fail X extract_dylora_bad_unit 2 'unit' --model a/A.safetensors --save_to e.safetensors --unit 0
expect_fail X extract_dylora_missing 1 'nope.safetensors' --model nope.safetensors --save_to e.safetensors --unit 2
expect_fail X extract_dylora_not_lora 1 'no lora_down' --model tiny.safetensors --save_to e.safetensors --unit 2
exit 0
