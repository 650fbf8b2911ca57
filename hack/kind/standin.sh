#!/usr/bin/env bash
# Builds the PD and TiKV stand-in image (a one-layer OCI archive, hack/testbed/images/mkimage.py)
# and prints its path. They run the project's stand-ins, tests/pdstub (PD's HTTP API; the store
# process), behind /pd-server and /tikv-server entry points that take real PD's and TiKV's flags,
# so hack/kind/standin/ applies manifests/tikv unchanged but for the image names. Where pingcap's
# images can be pulled, none of this is used (docs/adr/0014-kind-node-image.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${AFTERSHOCK_CACHE:-$HOME/.cache/aftershock}
out="$cache/kind/images-standin"
mkdir -p "$out"

python_rootfs=$("$repo/hack/testbed/images.sh" base)
# The stand-ins' own files (tests/pdstub imports nothing outside them but the standard library).
files=(tests/__init__.py tests/pdstub/__init__.py tests/pdstub/server.py tests/pdstub/fleet.py
       tests/pdstub/store.py tests/pdstub/config_schedule.json)
entries=(hack/kind/standin/pd-server hack/kind/standin/tikv-server)
key=$(cd "$repo" && sha256sum "${files[@]}" "${entries[@]}" | sha256sum | cut -c1-12)
add=()
for f in "${files[@]}"; do add+=(--add "$repo/$f:/standin/$f"); done

# One image for both (the base is most of it, and every node stores what kind loads).
archive="$out/standin-$key.tar"
if [ ! -f "$archive" ]; then
  rm -f "$out"/standin-*.tar
  python3 "$repo/hack/testbed/images/mkimage.py" "$python_rootfs" registry.local/pd-tikv-standin:local \
    "$archive.tmp" "${add[@]}" --add "$here/standin/pd-server:/pd-server" \
    --add "$here/standin/tikv-server:/tikv-server" >/dev/null
  mv "$archive.tmp" "$archive"
  printf '[standin %s] built registry.local/pd-tikv-standin:local\n' "$(date +%H:%M:%S)" >&2
fi
echo "$archive"
