# shellcheck shell=bash
# Sourced by tests/cli/*.sh (not a test itself: mode 644, and it prints no "ok" / "not ok" line of its own):
#   . "$(dirname "$0")/lib.sh"
#   t_init NAME [PREFIX]     set -u; cd to the repository root; root (that folder), build ($SD_BUILD or build),
#                            tmp ($SD_TEST_TMP or a new folder, then /NAME: emptied and created); PREFIX (default
#                            NAME) starts the names of the tests the helpers below report (PREFIX_built, ...)
#   ok NAME / nok NAME [WHY] print "ok NAME" / "not ok NAME" (and "# WHY")
#   t_need PROGRAM...        each must be executable, else "not ok PREFIX_built" and exit 1
#   t_tiny_build [--build]   $tmp/tiny_model (examples/tiny_model.c): the prebuilt $TINY_MODEL when set (a machine
#                            without the -dev packages), built with examples/build_tiny.sh otherwise (always with
#                            --build); on failure "not ok PREFIX_tiny_build" and exit 1
#   t_meta FILE KEY          a safetensors file's __metadata__ value (<absent> when missing), by python3 (stdlib)
#   t_wdiff A B              "MAXDIFF MAXABS": max |a - b| over the F32 tensors (all but *.alpha) of two safetensors
#                            files with the same keys, and the largest |a|
#   t_refuse [-1] NAME RC PATTERN CMD...  "ok NAME" when CMD exits RC (!0: any failure) with a stderr line that
#                            matches PATTERN (grep), with -1 also exactly one stderr line (a "Try ..." hint aside);
#                            else "not ok NAME" with the exit status and the error
#   expect_fail RUN NAME CODE PATTERN ARGS...  the same for a RUN that writes e.safetensors, which must not be left
# tests/cli/st_load.py is the numpy reader the scripts' embedded Python imports (sys.path.insert(0, ST_LOAD_DIR)).

t_init() {
  set -u
  cd "$(dirname "$0")/../.." || exit 1
  root=$PWD
  build=${SD_BUILD:-build}
  tmp=${SD_TEST_TMP:-$(mktemp -d)}/$1
  t_prefix=${2:-$1}
  export ST_LOAD_DIR=$root/tests/cli PYTHONDONTWRITEBYTECODE=1
  rm -rf "$tmp"; mkdir -p "$tmp"
}

ok() { echo "ok $1"; }
nok() { echo "not ok $1"; [ -n "${2:-}" ] && echo "# $2"; }

t_need() {
  local p
  for p in "$@"; do
    [ -x "$p" ] || { echo "# $p not built"; echo "not ok ${t_prefix}_built"; exit 1; }
  done
}

t_tiny_build() {
  if [ -n "${TINY_MODEL:-}" ] && [ "${1:-}" != --build ]; then cp "$TINY_MODEL" "$tmp/tiny_model"
  else (cd "$root" && examples/build_tiny.sh "$build" "$tmp/tiny_model") || { nok "${t_prefix}_tiny_build"; exit 1; }; fi
}

t_meta() { python3 - "$1" "$2" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
print(h.get('__metadata__', {}).get(sys.argv[2], '<absent>'))
PY
}

t_wdiff() { python3 - "$1" "$2" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    out = {}
    for k, v in h.items():
        if k != '__metadata__' and not k.endswith('.alpha') and v['dtype'] == 'F32':
            s, e = v['data_offsets']; out[k] = struct.unpack('<%df' % ((e - s) // 4), d[s:e])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys() and a
print('%.3g %.3g' % (max(abs(x - y) for k in a for x, y in zip(a[k], b[k])), max(abs(x) for k in a for x in a[k])))
PY
}

t_refuse() {
  local one=0 name want pat rc lines; [ "$1" = -1 ] && { one=1; shift; }
  name=$1 want=$2 pat=$3; shift 3
  "$@" > "$tmp/t_refuse.out" 2> "$tmp/t_refuse.err"; rc=$?
  lines=$(grep -vc '^Try ' "$tmp/t_refuse.err")
  if { [ "$rc" = "$want" ] || { [ "$want" = '!0' ] && [ "$rc" != 0 ]; }; } && { [ $one = 0 ] || [ "$lines" = 1 ]; } &&
     grep -q -- "$pat" "$tmp/t_refuse.err"; then ok "$name"
  else nok "$name" "rc $rc (want $want), $lines lines: $(head -3 "$tmp/t_refuse.err" | tr '\n' ' ')"; fi
}

# expect_fail RUN NAME CODE PATTERN ARGS...: runs "RUN ARGS..." (a function of the caller that writes e.safetensors)
# and passes NAME when it exits CODE with exactly one error line (a "Try ..." usage hint aside) matching PATTERN and
# leaves neither e.safetensors nor a temporary file of it behind (in the current folder).
expect_fail() {
  local run=$1 name=$2 code=$3 pat=$4; shift 4
  rm -f e.safetensors
  "$run" "$@" > e.out 2> e.err; local rc=$?
  local lines; lines=$(grep -vc '^Try ' e.err)
  if [ "$rc" = "$code" ] && [ "$lines" = 1 ] && grep -q -- "$pat" e.err && [ ! -e e.safetensors ] &&
     [ -z "$(ls -a | grep '^\.e\.safetensors\|^e\.safetensors.')" ]; then ok "$name"
  else nok "$name" "rc $rc (want $code), $lines lines: $(head -2 e.err)"; fi
}
