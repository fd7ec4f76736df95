#!/usr/bin/env python3
"""Write N small but valid synthetic .deb files, fast, for benchmarks.

Usage: gen_debs.py OUTDIR N [--prefix NAME] [--arch amd64]
Each package has a distinct name, a control file like a real one, and a data.tar
with two files, so Packages, Contents and pool layout get realistic work. dpkg-deb
accepts the result (ar: debian-binary, control.tar.gz, data.tar.gz).
"""
import argparse
import gzip
import io
import os
import tarfile
import time


def tar_gz(entries):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = 1672531200
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)


def ar_member(name, data):
    header = f"{name:<16}{1672531200:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def deb(name, version, arch):
    control = (
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
        f"Maintainer: caprepo bench <bench@caprepo.invalid>\nInstalled-Size: 8\nSection: misc\nPriority: optional\n"
        f"Depends: libc6 (>= 2.34)\nDescription: synthetic package {name}\n A package generated for caprepo benchmarks.\n"
    ).encode()
    control_tar = tar_gz([("./control", control, 0o644)])
    data_tar = tar_gz([
        (f"./usr/share/doc/{name}/README", f"{name} {version}\n".encode(), 0o644),
        (f"./usr/bin/{name}", b"#!/bin/sh\necho hi\n", 0o755),
    ])
    return b"!<arch>\n" + ar_member("debian-binary", b"2.0\n") + ar_member("control.tar.gz", control_tar) + ar_member("data.tar.gz", data_tar)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("outdir")
    parser.add_argument("count", type=int)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--arch", default="amd64")
    parser.add_argument("--version", default="1.0-1")
    args = parser.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    started = time.time()
    for i in range(args.count):
        name = f"{args.prefix}-{i:06d}"
        with open(os.path.join(args.outdir, f"{name}_{args.version}_{args.arch}.deb"), "wb") as f:
            f.write(deb(name, args.version, args.arch))
    print(f"wrote {args.count} debs to {args.outdir} in {time.time() - started:.1f}s")


if __name__ == "__main__":
    main()
