#!/usr/bin/env python3
"""Make a one-layer OCI image archive from a folder, with no daemon and no registry.

    mkimage.py ROOTFS NAME OUT.tar [--entrypoint a,b] [--cmd a,b] [--env K=V] [--add SRC:DEST]

The archive is an OCI image layout that ``ctr -n k8s.io images import`` takes. Files are
owned by root and stamped with mtime 0, so the same folder gives the same digest: a cached
archive can be compared instead of rebuilt. ``--add`` puts extra files in the layer (e.g. a
binary from the build cache) without copying them into ROOTFS first.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def layer(rootfs: Path, extra: list[tuple[Path, str]]) -> bytes:
    """The layer tar: every entry of ``rootfs`` in a stable order, then the extra files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in [*dirnames, *sorted(filenames)]:
                full = Path(dirpath, name)
                info = _normalise(tar.gettarinfo(str(full), arcname=str(full.relative_to(rootfs))))
                if info.isfile():
                    with full.open("rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
        for src, dest in extra:
            info = _normalise(tar.gettarinfo(str(src), arcname=dest.lstrip("/")))
            with src.open("rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _split(value: str) -> list[str] | None:
    return [x for x in value.split(",") if x] or None


def archive(name: str, layer_tar: bytes, entrypoint: str, cmd: str, env: list[str]) -> bytes:
    layer_digest = _digest(layer_tar)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": env, "Entrypoint": _split(entrypoint), "Cmd": _split(cmd)},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "hack/testbed/images/mkimage.py"}],
    }
    config_b = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _digest(config_b),
            "size": len(config_b),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": len(layer_tar),
            }
        ],
    }
    manifest_b = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": _digest(manifest_b),
                "size": len(manifest_b),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:

        def add(path: str, data: bytes) -> None:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        for blob in (layer_tar, config_b, manifest_b):
            add("blobs/sha256/" + _digest(blob).split(":")[1], blob)
        add("index.json", json.dumps(index).encode())
    return out.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rootfs", type=Path)
    p.add_argument("name")
    p.add_argument("out", type=Path)
    p.add_argument("--entrypoint", default="")
    p.add_argument("--cmd", default="")
    p.add_argument("--env", action="append", default=[DEFAULT_PATH])
    p.add_argument("--add", action="append", default=[], metavar="SRC:DEST")
    a = p.parse_args()
    extra = [(Path(s.split(":", 1)[0]), s.split(":", 1)[1]) for s in a.add]
    data = archive(a.name, layer(a.rootfs, extra), a.entrypoint, a.cmd, a.env)
    tmp = a.out.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(a.out)
    print(a.name, len(data), "bytes")


if __name__ == "__main__":
    main()
