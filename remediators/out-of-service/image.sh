#!/usr/bin/env bash
# The reference remediator's image, built here with no registry and no daemon: the test bed's
# Debian + Python root filesystem (hack/testbed/images.sh base) plus remediator.py, as a
# one-layer OCI archive (hack/testbed/images/mkimage.py). Prints the archive's path.
#
#   remediators/out-of-service/image.sh            build (cached by the script's hash)
#   remediators/out-of-service/image.sh import     build and import into real-0's containerd
#
# Elsewhere: any Python 3.9+ image with remediator.py in it does (no dependencies), e.g.
#   FROM python:3.12-slim
#   COPY remediator.py /remediator.py
#   ENTRYPOINT ["python3", "/remediator.py"]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${AFTERSHOCK_CACHE:-$HOME/.cache/aftershock}
rootfs=$("$repo/hack/testbed/images.sh" base)
key=$(sha256sum "$here/remediator.py" | cut -c1-16)
archive="$cache/images/out-of-service-$key.tar"
if [ ! -f "$archive" ]; then
  "${PYTHON:-python3}" "$repo/hack/testbed/images/mkimage.py" "$rootfs" registry.local/out-of-service:local \
    "$archive" --add "$here/remediator.py:/remediator.py" --entrypoint python3,/remediator.py >/dev/null
fi
if [ "${1:-}" = import ]; then "$repo/hack/testbed/realnode.sh" import "$archive"; fi
echo "$archive"
