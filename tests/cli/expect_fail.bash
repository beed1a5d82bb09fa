# Sourced by tests/cli scripts (not a test itself): expect_fail RUN NAME CODE PATTERN ARGS...
# runs "RUN ARGS..." (a function of the caller that writes e.safetensors) and passes NAME when it
# exits CODE with exactly one error line (a "Try ..." usage hint aside) matching PATTERN and leaves
# neither e.safetensors nor a temporary file of it behind. Needs the caller's ok / nok.
expect_fail() {
  local run=$1 name=$2 code=$3 pat=$4; shift 4
  rm -f e.safetensors
  "$run" "$@" > e.out 2> e.err; local rc=$?
  local lines; lines=$(grep -vc '^Try ' e.err)
  if [ "$rc" = "$code" ] && [ "$lines" = 1 ] && grep -q -- "$pat" e.err && [ ! -e e.safetensors ] &&
     [ -z "$(ls -a | grep '^\.e\.safetensors\|^e\.safetensors.')" ]; then ok "$name"
  else nok "$name" "rc $rc (want $code), $lines lines: $(head -2 e.err)"; fi
}
