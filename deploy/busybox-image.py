#!/usr/bin/env python3
"""Builds a small OCI image from the host's static busybox, for the local
cluster's demo service (no registry on the internet is needed).

    deploy/busybox-image.py --out FILE.tar [--tag busybox:latest]
    deploy/busybox-image.py --push HOST:PORT/REPO:TAG

`--out` writes an OCI image layout archive that `rswarm image load -i` takes.
`--push` uploads the image to a registry over plain HTTP (a registry on a
private address, e.g. Debian's docker-registry), with the registry API's
monolithic blob upload. The image is one layer: /bin/busybox with a link per
applet, /etc/passwd and /etc/group, and a /www/index.html for httpd. The
layer is built with fixed times and owners, so the same busybox always gives
the same digest.
"""

import argparse
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request

BUSYBOX = "/usr/bin/busybox"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
HTTP_TIMEOUT_SECS = 30


def fail(message):
    print(f"busybox-image: {message}", file=sys.stderr)
    sys.exit(1)


def add(tar, name, data=b"", mode=0o644, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def layer_tar():
    """The uncompressed layer."""
    if shutil.which(BUSYBOX) is None:
        fail(f"{BUSYBOX} not found: apt-get install busybox-static")
    applets = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True)
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ["bin", "etc", "tmp", "www", "proc", "sys", "dev", "run", "root"]:
            add(tar, d, kind=tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755)
        add(tar, "bin/busybox", busybox, mode=0o755)
        for applet in sorted(set(applets.stdout.split()) - {"busybox"}):
            add(tar, f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox")
        add(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        add(tar, "www/index.html", b"hello from rswarm\n")
    return out.getvalue()


def build():
    """The image's blobs, by digest, and its manifest."""
    raw = layer_tar()
    layer = gzip.compress(raw, mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [sha256(raw)]},
    }, sort_keys=True).encode()
    blobs = {sha256(layer): layer, sha256(config): config}
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": sha256(layer), "size": len(layer)}],
    }, sort_keys=True).encode()
    return blobs, manifest


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_layout(path, tag):
    blobs, manifest = build()
    blobs[sha256(manifest)] = manifest
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": MANIFEST_TYPE, "digest": sha256(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }]}).encode()
    with tarfile.open(path, "w") as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add(tar, "index.json", index)
        for digest, data in sorted(blobs.items()):
            add(tar, "blobs/sha256/" + digest.split(":")[1], data)
    print(f"wrote {path}: {tag} {sha256(manifest)}")


def request(method, url, data=None, content_type=None):
    req = urllib.request.Request(url, data=data, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        return urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_SECS)
    except urllib.error.HTTPError as e:
        if method == "HEAD" and e.code == 404:
            return None
        fail(f"{method} {url}: {e.code} {e.read().decode(errors='replace')[:200]}")
    except OSError as e:
        fail(f"{method} {url}: {e}: is the registry running?")


def push(target):
    registry, _, rest = target.partition("/")
    repo, _, tag = rest.rpartition(":") if ":" in rest else (rest, "", "latest")
    if not registry or not repo:
        fail(f"--push wants HOST:PORT/REPO:TAG, got {target!r}")
    base = f"http://{registry}/v2/{repo}"
    blobs, manifest = build()
    for digest, data in blobs.items():
        if request("HEAD", f"{base}/blobs/{digest}") is not None:
            continue
        location = request("POST", f"{base}/blobs/uploads/").headers["Location"]
        if location.startswith("/"):
            location = f"http://{registry}{location}"
        sep = "&" if "?" in location else "?"
        request("PUT", f"{location}{sep}digest={digest}", data, "application/octet-stream")
    request("PUT", f"{base}/manifests/{tag}", manifest, MANIFEST_TYPE)
    print(f"pushed {target} {sha256(manifest)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write an OCI layout archive to this file")
    parser.add_argument("--tag", default="busybox:latest", help="the archive's tag")
    parser.add_argument("--push", metavar="HOST:PORT/REPO:TAG", help="push to a plain-HTTP registry")
    args = parser.parse_args()
    if not args.out and not args.push:
        parser.error("give --out FILE or --push HOST:PORT/REPO:TAG")
    if args.out:
        write_layout(args.out, args.tag)
    if args.push:
        push(args.push)


if __name__ == "__main__":
    main()
