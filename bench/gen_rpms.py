#!/usr/bin/env python3
"""Write N small but valid synthetic binary .rpm files, fast, for benchmarks.

Usage: gen_rpms.py OUTDIR N [--prefix NAME] [--arch x86_64] [--version 1.0-1]
The RPM twin of gen_debs.py: benchmarks need thousands of packages, and rpmbuild
runs a whole build per package, so this writes the format directly (stdlib only): the
96-byte lead, a signature header with the digests rpm 4.18 checks (SHA-1 and
SHA-256 of the main header, size and MD5 of header + payload, payload size), a
main header like rpmbuild's (description, dependencies, changelog, two files and
a directory with SHA-256 file digests, payload digests), and a gzip-compressed
cpio (newc) payload. `rpm -K`, `rpm -i`, createrepo_c, dnf and caprepo accept
the result; names are distinct so repodata and pool layout get realistic work.
"""
import argparse
import gzip
import hashlib
import os
import struct
import time

EPOCH = 1672531200  # build time and file mtimes: fixed, so output is reproducible
VENDOR = "caprepo bench"
PACKAGER = "caprepo bench <bench@caprepo.invalid>"

# Header data types (rpmTagType) and the alignment rpm requires of numeric data.
INT16, INT32, STRING, BIN, STRING_ARRAY, I18NSTRING = 3, 4, 6, 7, 8, 9
ALIGN = {INT16: 2, INT32: 4}
HEADER_MAGIC = b"\x8e\xad\xe8\x01\x00\x00\x00\x00"
HEADERSIGNATURES, HEADERIMMUTABLE = 62, 63

RPMFILE_DOC = 1 << 1
RPMSENSE_LESS, RPMSENSE_GREATER, RPMSENSE_EQUAL, RPMSENSE_RPMLIB = 1 << 1, 1 << 2, 1 << 3, 1 << 24
DIGEST_SHA256 = 8  # PGPHASHALGO_SHA256, for FILEDIGESTALGO and PAYLOADDIGESTALGO
DIR_SIZE = 4096  # a directory's st_size, which rpmbuild records as its file size
GZIP_LEVEL = 6
LEAD_ARCH = {"x86_64": 1, "i686": 1, "aarch64": 19, "noarch": 255}  # from rpmrc arch_canon

# Features the header uses, which rpmbuild declares as rpmlib() requirements.
RPMLIB_REQUIRES = [
    ("rpmlib(CompressedFileNames)", "3.0.4-1"),
    ("rpmlib(FileDigests)", "4.6.0-1"),
    ("rpmlib(PayloadFilesHavePrefix)", "4.0-1"),
]


def encode(kind, value):
    """The store bytes and index count of one header entry."""
    if kind == INT16:
        return struct.pack(f">{len(value)}H", *value), len(value)
    if kind == INT32:
        return struct.pack(f">{len(value)}I", *value), len(value)
    if kind in (STRING, I18NSTRING):
        return value.encode() + b"\0", 1
    if kind == STRING_ARRAY:
        return b"".join(s.encode() + b"\0" for s in value), len(value)
    return value, len(value)  # BIN


def header(region_tag, entries):
    """A header blob from (tag, type, value) entries. rpm wants the region tag first in
    the index, its trailer (a negative offset covering every entry) last in the store,
    and the other entries' data in index order, aligned."""
    index, store = [], bytearray()
    for tag, kind, value in sorted(entries, key=lambda e: e[0]):
        store += b"\0" * (-len(store) % ALIGN.get(kind, 1))
        data, count = encode(kind, value)
        index.append(struct.pack(">4I", tag, kind, len(store), count))
        store += data
    count = len(index) + 1
    region = struct.pack(">4I", region_tag, BIN, len(store), 16)
    store += struct.pack(">IIiI", region_tag, BIN, -16 * count, 16)
    return HEADER_MAGIC + struct.pack(">2I", count, len(store)) + region + b"".join(index) + store


def pad4(data):
    return data + b"\0" * (-len(data) % 4)


def cpio_entry(ino, name, mode, nlink, data):
    """One newc ("070701") cpio member: header and name, then data, each padded to 4."""
    name = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, EPOCH, len(data), 0, 0, 0, 0, len(name), 0)
    return pad4(b"070701" + b"".join(b"%08x" % f for f in fields) + name) + pad4(data)


def cpio(files):
    # PayloadFilesHavePrefix: members are named "./usr/...".
    members = [cpio_entry(i + 1, "." + path, mode, 2 if data is None else 1, data or b"")
               for i, (path, mode, data, _) in enumerate(files)]
    return b"".join(members) + cpio_entry(0, "TRAILER!!!", 0, 1, b"")


def file_entries(files):
    """The per-file header tags; `files` is sorted by path, as rpm's lookups expect."""
    dirnames, dirindexes, basenames = [], [], []
    for path, _, _, _ in files:
        parent, base = path.rsplit("/", 1)
        if parent + "/" not in dirnames:
            dirnames.append(parent + "/")
        dirindexes.append(dirnames.index(parent + "/"))
        basenames.append(base)
    n = len(files)
    sizes = [DIR_SIZE if data is None else len(data) for _, _, data, _ in files]
    digests = ["" if data is None else hashlib.sha256(data).hexdigest() for _, _, data, _ in files]
    return [
        (1009, INT32, [sum(sizes)]),  # SIZE, the installed size
        (1028, INT32, sizes),  # FILESIZES
        (1030, INT16, [mode for _, mode, _, _ in files]),  # FILEMODES
        (1033, INT16, [0] * n),  # FILERDEVS
        (1034, INT32, [EPOCH] * n),  # FILEMTIMES
        (1035, STRING_ARRAY, digests),  # FILEDIGESTS
        (1036, STRING_ARRAY, [""] * n),  # FILELINKTOS
        (1037, INT32, [flags for _, _, _, flags in files]),  # FILEFLAGS
        (1039, STRING_ARRAY, ["root"] * n),  # FILEUSERNAME
        (1040, STRING_ARRAY, ["root"] * n),  # FILEGROUPNAME
        (1045, INT32, [0xFFFFFFFF] * n),  # FILEVERIFYFLAGS: verify everything
        (1095, INT32, [1] * n),  # FILEDEVICES
        (1096, INT32, list(range(1, n + 1))),  # FILEINODES: distinct, so no hard links
        (1097, STRING_ARRAY, [""] * n),  # FILELANGS
        (1116, INT32, dirindexes),  # DIRINDEXES
        (1117, STRING_ARRAY, basenames),  # BASENAMES
        (1118, STRING_ARRAY, dirnames),  # DIRNAMES
        (5011, INT32, [DIGEST_SHA256]),  # FILEDIGESTALGO
    ]


def dependency_entries(name, evr):
    requires = [("/bin/sh", 0, ""), ("glibc", RPMSENSE_GREATER | RPMSENSE_EQUAL, "2.34")]
    requires += [(lib, RPMSENSE_RPMLIB | RPMSENSE_LESS | RPMSENSE_EQUAL, v) for lib, v in RPMLIB_REQUIRES]
    provides = [(name, RPMSENSE_EQUAL, evr), ("caprepo-bench-payload", 0, "")]
    return [
        (1047, STRING_ARRAY, [n for n, _, _ in provides]),  # PROVIDENAME
        (1048, INT32, [f for _, f, _ in requires]),  # REQUIREFLAGS
        (1049, STRING_ARRAY, [n for n, _, _ in requires]),  # REQUIRENAME
        (1050, STRING_ARRAY, [v for _, _, v in requires]),  # REQUIREVERSION
        (1112, INT32, [f for _, f, _ in provides]),  # PROVIDEFLAGS
        (1113, STRING_ARRAY, [v for _, _, v in provides]),  # PROVIDEVERSION
    ]


def main_header(name, version, release, arch, files, archive, payload):
    evr = f"{version}-{release}"
    entries = [
        (100, STRING_ARRAY, ["C"]),  # HEADERI18NTABLE: the locale of the I18N strings
        (1000, STRING, name),
        (1001, STRING, version),
        (1002, STRING, release),
        (1004, I18NSTRING, f"Synthetic package {name} for caprepo benchmarks"),  # SUMMARY
        (1005, I18NSTRING, f"{name} is generated by bench/gen_rpms.py.\n"
                           "It installs a small script and its README."),  # DESCRIPTION
        (1006, INT32, [EPOCH]),  # BUILDTIME
        (1007, STRING, "build.caprepo.invalid"),  # BUILDHOST
        (1011, STRING, VENDOR),
        (1014, STRING, "MIT"),  # LICENSE
        (1015, STRING, PACKAGER),
        (1016, I18NSTRING, "Development/Tools"),  # GROUP
        (1020, STRING, f"https://caprepo.invalid/{name}"),  # URL
        (1021, STRING, "linux"),  # OS
        (1022, STRING, arch),
        (1044, STRING, f"{name}-{evr}.src.rpm"),  # SOURCERPM
        (1064, STRING, "4.18.0"),  # RPMVERSION
        (1080, INT32, [EPOCH - 43200, EPOCH - 43200 - 30 * 86400]),  # CHANGELOGTIME, newest first
        (1081, STRING_ARRAY, [f"{PACKAGER} - {evr}", f"{PACKAGER} - {version}-0.1"]),  # CHANGELOGNAME
        (1082, STRING_ARRAY, ["- Release for the benchmark.", "- Initial package."]),  # CHANGELOGTEXT
        (1124, STRING, "cpio"),  # PAYLOADFORMAT
        (1125, STRING, "gzip"),  # PAYLOADCOMPRESSOR
        (1126, STRING, str(GZIP_LEVEL)),  # PAYLOADFLAGS
        (1132, STRING, f"{arch}-pc-linux-gnu"),  # PLATFORM
        (5062, STRING, "utf-8"),  # ENCODING
        (5092, STRING_ARRAY, [hashlib.sha256(payload).hexdigest()]),  # PAYLOADDIGEST, as stored
        (5093, INT32, [DIGEST_SHA256]),  # PAYLOADDIGESTALGO
        (5097, STRING_ARRAY, [hashlib.sha256(archive).hexdigest()]),  # PAYLOADDIGESTALT, uncompressed
    ]
    entries += file_entries(files) + dependency_entries(name, evr)
    return header(HEADERIMMUTABLE, entries)


def signature_header(main, payload, archive_size):
    """The signature header, padded to 8 bytes: rpm -K checks these digests."""
    sig = header(HEADERSIGNATURES, [
        (269, STRING, hashlib.sha1(main).hexdigest()),  # SHA1 of the main header
        (273, STRING, hashlib.sha256(main).hexdigest()),  # SHA256 of the main header
        (1000, INT32, [len(main) + len(payload)]),  # SIZE of header + payload
        (1004, BIN, hashlib.md5(main + payload).digest()),  # MD5 of header + payload
        (1007, INT32, [archive_size]),  # PAYLOADSIZE, uncompressed
    ])
    return sig + b"\0" * (-len(sig) % 8)


def lead(nvr, arch):
    """The 96-byte lead: rpm only checks its magic, but tools print the name."""
    name = nvr.encode()[:65].ljust(66, b"\0")
    return struct.pack(">4sBBHH66sHH16x", b"\xed\xab\xee\xdb", 3, 0, 0, LEAD_ARCH.get(arch, 0), name, 1, 5)


def rpm(name, version, release, arch):
    files = [  # (path, mode, data or None for a directory, RPMFILE_* flags), sorted by path
        (f"/usr/bin/{name}", 0o100755, b"#!/bin/sh\necho hi\n", 0),
        (f"/usr/share/doc/{name}", 0o040755, None, 0),
        (f"/usr/share/doc/{name}/README", 0o100644, f"{name} {version}-{release}\n".encode(), RPMFILE_DOC),
    ]
    archive = cpio(files)
    payload = gzip.compress(archive, compresslevel=GZIP_LEVEL, mtime=0)
    main = main_header(name, version, release, arch, files, archive, payload)
    return lead(f"{name}-{version}-{release}", arch) + signature_header(main, payload, len(archive)) + main + payload


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("outdir")
    parser.add_argument("count", type=int)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--arch", default="x86_64")
    parser.add_argument("--version", default="1.0-1", help="VERSION-RELEASE")
    args = parser.parse_args()
    version, _, release = args.version.rpartition("-")
    if not version:
        parser.error("--version must be VERSION-RELEASE, e.g. 1.0-1")
    os.makedirs(args.outdir, exist_ok=True)
    started = time.time()
    for i in range(args.count):
        name = f"{args.prefix}-{i:06d}"
        with open(os.path.join(args.outdir, f"{name}-{version}-{release}.{args.arch}.rpm"), "wb") as f:
            f.write(rpm(name, version, release, args.arch))
    print(f"wrote {args.count} rpms to {args.outdir} in {time.time() - started:.1f}s")


if __name__ == "__main__":
    main()
