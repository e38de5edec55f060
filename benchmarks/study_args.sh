# Sourced by the study scripts: their arguments are OUT, the studies to run, then `--` and flags
# passed to every study. Sets `out` and `studies`, leaves the flags in "$@", makes OUT/arms and
# defines `arm NAME BASE BODY`, which writes an arm's YAML there.
out=$1; shift
studies=()
while (($#)) && [[ $1 != -- ]]; do studies+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
mkdir -p "$out/arms"
arm() {  # name base body
  printf 'extends: %s\n%s\n' "$2" "$3" >"$out/arms/$1.yaml"
}
