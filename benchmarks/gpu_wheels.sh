#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels that the GPU machine's image lacks, for
# benchmarks/gpu_acceptance.sh to install there: run it here, on a machine that reaches PyPI
# (the GPU machine reaches nothing), from any directory.
#
#   bash benchmarks/gpu_wheels.sh                # download what benchmarks/gpu_wheels.txt lists
#   bash benchmarks/gpu_wheels.sh --update-lock  # after editing a version there: download, then
#                                                # print the lock lines to copy into it
#
# Each wheel of the lock is fetched for CPython 3.12 on manylinux x86-64 with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 ... -d .whl NAME==VERSION
# (pure-Python py3-none-any wheels match those platforms too); the few that PyPI has as source
# only (FETCH `sdist` in the lock) are built into pure-Python wheels with `pip wheel`. Wheels in
# .whl/ that the lock does not name are deleted (two versions of one package stop the whole
# install there). At the end benchmarks/gpu_wheels_check.py checks the folder against the lock
# (file names, SHA-256, Requires-Dist) and the lock against the image's package list.
# Wheels already in .whl/ under the lock's file name are not fetched again.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCK=$REPO/benchmarks/gpu_wheels.txt
DEST=$REPO/.whl
PY=${PYTHON:-python3}
UPDATE=0
case "${1:-}" in
  "") ;;
  --update-lock) UPDATE=1 ;;
  -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "gpu_wheels.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
mkdir -p "$DEST"

# NAME==VERSION FETCH FILE, one per wheel block of the lock
mapfile -t WHEELS < <(awk '/^[A-Za-z0-9]/ && $1 != "absent" {print $1, $2, $3}' "$LOCK")
[ "${#WHEELS[@]}" -gt 0 ] || { echo "gpu_wheels.sh: no wheels in $LOCK" >&2; exit 1; }

if [ "$UPDATE" = 0 ]; then
  wanted=" $(printf '%s\n' "${WHEELS[@]}" | awk '{printf "%s ", $3}')"
  for path in "$DEST"/*.whl; do
    [ -e "$path" ] || continue
    case "$wanted" in
      *" $(basename "$path") "*) ;;
      *) echo "removing $(basename "$path"): not in the lock"; rm -f -- "$path" ;;
    esac
  done
fi

for entry in "${WHEELS[@]}"; do
  read -r spec fetch file <<<"$entry"
  if [ "$UPDATE" = 0 ] && [ -f "$DEST/$file" ]; then
    continue
  fi
  echo "fetching $spec ($fetch)"
  if [ "$fetch" = sdist ]; then
    "$PY" -m pip wheel -q --no-deps --no-binary=:all: -w "$DEST" "$spec"
  else
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp "${PLATFORMS[@]}" -d "$DEST" "$spec"
  fi
done

if [ "$UPDATE" = 1 ]; then
  echo "# lock blocks for the wheels now in .whl/ (copy into $LOCK; re-add never-imported lines):"
  "$PY" "$REPO/benchmarks/gpu_wheels_check.py" --lock "$LOCK" --print-lock "$DEST"
  exit 0
fi

"$PY" "$REPO/benchmarks/gpu_wheels_check.py" --lock "$LOCK" --folder "$DEST"
echo "$(find "$DEST" -type f -name '*.whl' | wc -l) wheels, $(du -sk "$DEST" | cut -f1) KiB in $DEST;" \
     "on the GPU machine: name .whl in carry, run bash benchmarks/gpu_acceptance.sh"
