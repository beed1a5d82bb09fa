#!/usr/bin/env bash
# Latent files against the outside world (sd-latent(5)):
#  - the stored form loads in numpy.load with the right dtypes, shapes and values, and every
#    member's bytes equal what numpy's own np.save writes for the same array;
#  - the zstd form lists and extracts with bsdtar, and the extracted .npy bytes equal the
#    stored form's members;
#  - np.savez / np.savez_compressed files (and big-endian, Fortran-order, int32 variants) read
#    back through our reader; both our forms read back bit-exact.
# The files come from `test_latent --write DIR` (tests/unit/test_latent.c). Parts skip when
# /usr/bin/python3 + numpy or bsdtar are absent.
. "$(dirname "$0")/lib.sh"
t_init latent_numpy latent_helper
helper="$build/tests/unit/test_latent"
py=/usr/bin/python3
t_need "$helper"

if "$helper" --write "$tmp" && [ -s "$tmp/store.npz" ] && [ -s "$tmp/zstd.npz" ] && [ -s "$tmp/half.npz" ]; then
  ok latent_write
else
  nok latent_write
  exit 1
fi

check() {  # $1 = test name, $2 = file
  if out=$("$helper" --check "$2" 2>&1); then echo "# $out"; ok "$1"
  else echo "# $out"; nok "$1"; fi
}
check latent_store_reads_back "$tmp/store.npz"
check latent_zstd_reads_back "$tmp/zstd.npz"
check latent_half_reads_back "$tmp/half.npz"

# ---- numpy -------------------------------------------------------------------------------------
if [ -x "$py" ] && "$py" -c 'import numpy' 2>/dev/null; then
  if "$py" - "$tmp" <<'EOF'
import io, json, sys, zipfile
import numpy as np
d = sys.argv[1]
i = np.arange(60)
lat = (((i * 37 % 1001) - 500) / 64.0).astype(np.float32).reshape(4, 3, 5)
flip = (((i * 53 % 999) - 499) / 32.0).astype(np.float32).reshape(4, 3, 5)
mask = ((np.arange(24 * 40) % 256) / 255.0).astype(np.float32).reshape(24, 40)
orig = np.array([1000, 600], dtype=np.int64)
crop = np.array([0, 2, 40, 26], dtype=np.int64)
want = {'latents': lat, 'original_size': orig, 'crop_ltrb': crop, 'latents_flipped': flip, 'alpha_mask': mask}

def check(path, half=False):
    z = np.load(path)
    assert z.files == ['latents', 'original_size', 'crop_ltrb', 'latents_flipped', 'alpha_mask', 'sd_meta.json'], z.files
    for k, w in want.items():
        a = z[k]
        if half and k in ('latents', 'latents_flipped'):
            w = w.astype(np.float16)
        assert a.dtype == w.dtype, (path, k, a.dtype, w.dtype)
        assert a.shape == w.shape, (path, k, a.shape, w.shape)
        assert np.array_equal(a, w), (path, k)
    meta = json.loads(z['sd_meta.json'])
    assert meta['format'] == 1 and meta['bucket'] == [40, 24], meta
    # numpy's own bytes for the same arrays equal our members byte for byte
    with zipfile.ZipFile(path) as zf:
        for k in want:
            b = io.BytesIO()
            np.save(b, z[k])
            assert zf.read(k + '.npy') == b.getvalue(), (path, k, 'bytes differ from np.save')
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_STORED

check(d + '/store.npz')
check(d + '/half.npz', half=True)

# The zstd form: the member list loads everywhere; the data only on Python >= 3.14.
z = np.load(d + '/zstd.npz')
assert 'latents' in z.files
if sys.version_info >= (3, 14):
    assert np.array_equal(z['latents'], lat)
else:
    try:
        z['latents']
        raise SystemExit('zstd member unexpectedly readable on Python < 3.14')
    except NotImplementedError:
        pass

# Files numpy writes, for our reader.
np.savez(d + '/np_savez.npz', **want)
np.savez_compressed(d + '/np_compressed.npz', **want)
# (the fixture values are exact in float16, so f16 latents compare equal)
np.savez(d + '/np_variants.npz', latents=np.asfortranarray(lat.astype('<f2')),
         original_size=orig.astype(np.int32), crop_ltrb=crop.astype(np.int32),
         latents_flipped=np.asfortranarray(flip.astype('>f4')), alpha_mask=mask.astype('>f4'),
         extra_key=np.zeros(3))
print('numpy', np.__version__, 'ok')
EOF
  then ok latent_numpy_load; else nok latent_numpy_load; fi
  check latent_read_np_savez "$tmp/np_savez.npz"
  check latent_read_np_savez_compressed "$tmp/np_compressed.npz"
  check latent_read_np_variants "$tmp/np_variants.npz"
else
  ok "latent_numpy_load # SKIP numpy not installed"
fi

# ---- bsdtar ------------------------------------------------------------------------------------
if command -v bsdtar >/dev/null 2>&1; then
  list=$(bsdtar -tf "$tmp/zstd.npz" | tr '\n' ' ')
  if [ "$list" = "latents.npy original_size.npy crop_ltrb.npy latents_flipped.npy alpha_mask.npy sd_meta.json " ]; then
    ok latent_bsdtar_list
  else
    nok latent_bsdtar_list "bsdtar -t: $list"
  fi
  mkdir -p "$tmp/xz" "$tmp/xs"
  if bsdtar -xf "$tmp/zstd.npz" -C "$tmp/xz" && bsdtar -xf "$tmp/store.npz" -C "$tmp/xs"; then
    okx=1
    for m in latents.npy original_size.npy crop_ltrb.npy latents_flipped.npy alpha_mask.npy sd_meta.json; do
      cmp -s "$tmp/xz/$m" "$tmp/xs/$m" || { echo "# $m differs"; okx=0; }
    done
    if [ $okx = 1 ]; then ok latent_bsdtar_extract; else nok latent_bsdtar_extract; fi
  else
    nok latent_bsdtar_extract
  fi
else
  ok "latent_bsdtar_list # SKIP bsdtar not installed (libarchive-tools)"
  ok "latent_bsdtar_extract # SKIP bsdtar not installed (libarchive-tools)"
fi
