#!/usr/bin/env python3
"""Print kind's default storage manifest (local-path-provisioner) with the images built here.

    storage_manifest.py KIND_VERSION PROVISIONER_IMAGE HELPER_IMAGE

The manifest is kind's own, read from the pinned kind module's source
(pkg/build/nodeimage/const_storage.go), so it follows kind when the pin moves; only the two
image references are swapped for the ones hack/kind/node/build.sh builds.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def main() -> None:
    version, provisioner, helper = sys.argv[1:4]
    modcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    src = Path(modcache, f"sigs.k8s.io/kind@{version}", "pkg/build/nodeimage/const_storage.go").read_text()
    body = re.search(r"const defaultStorageManifest = `(.*?)\n`", src, re.S)
    if body is None:
        sys.exit(f"defaultStorageManifest not found in kind {version}'s const_storage.go")
    text = body.group(1)
    text = text.replace("` + storageProvisionerImage + `", provisioner)
    text = text.replace("` + storageHelperImage + `", helper)
    if "` +" in text:
        sys.exit("kind's storage manifest references a constant this script does not know")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
