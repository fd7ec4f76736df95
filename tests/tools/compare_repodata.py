#!/usr/bin/env python3
"""Compare two RPM repodata trees package by package, field by field.

Usage: compare_repodata.py OURS_DIR THEIRS_DIR
Each DIR holds repodata/repomd.xml and the files it names. Records are matched by
pkgid (the sha256 of the package file) and every element and attribute of primary,
filelists and other is compared, except the two that describe local files rather
than packages: <time file=> (createrepo_c writes the file's mtime) and
<location href=> (only the file name is compared, the directories differ by layout).
Exits 1 and prints every difference.
"""
import difflib
import gzip
import os
import sys
import xml.etree.ElementTree as ET

NS = {
    "repo": "http://linux.duke.edu/metadata/repo",
    "common": "http://linux.duke.edu/metadata/common",
    "rpm": "http://linux.duke.edu/metadata/rpm",
    "fl": "http://linux.duke.edu/metadata/filelists",
    "oth": "http://linux.duke.edu/metadata/other",
}


def load(root, kind):
    repomd = ET.parse(os.path.join(root, "repodata", "repomd.xml")).getroot()
    for data in repomd.findall("repo:data", NS):
        if data.get("type") == kind:
            href = data.find("repo:location", NS).get("href")
            with gzip.open(os.path.join(root, href)) as f:
                return ET.fromstring(f.read())
    raise SystemExit(f"{root}: repomd.xml has no {kind}")


def canon(element, ignore):
    """An element as nested tuples: tag, sorted attributes, text, children in order."""
    attrs = tuple(sorted((k, v) for k, v in element.attrib.items() if (element.tag, k) not in ignore))
    if (element.tag, "href") in ignore and "href" in element.attrib:
        attrs += (("href-basename", os.path.basename(element.attrib["href"])),)
    text = (element.text or "").strip()
    return (element.tag, attrs, text, tuple(canon(child, ignore) for child in element))


def flatten(node, path=""):
    """One line per element: its path, attributes and text, in document order."""
    tag, attrs, text, children = node
    here = f"{path}/{tag.split('}')[-1]}"
    lines = [f"{here} {dict(attrs)} {text!r}"]
    for child in children:
        lines.extend(flatten(child, here))
    return lines


def records(root, kind):
    doc = load(root, kind)
    out = {}
    for package in doc:
        if kind == "primary":
            pkgid = package.find("common:checksum", NS).text
        else:
            pkgid = package.get("pkgid")
        out[pkgid] = package
    return doc.get("packages"), out


def main():
    ours_dir, theirs_dir = sys.argv[1], sys.argv[2]
    time_tag = "{%s}time" % NS["common"]
    location_tag = "{%s}location" % NS["common"]
    ignore = {(time_tag, "file"), (location_tag, "href")}
    problems = []
    compared = 0
    for kind in ("primary", "filelists", "other"):
        ours_count, ours = records(ours_dir, kind)
        theirs_count, theirs = records(theirs_dir, kind)
        if ours_count != theirs_count:
            problems.append(f"{kind}: packages={ours_count} vs createrepo_c {theirs_count}")
        if set(ours) != set(theirs):
            problems.append(f"{kind}: package sets differ: only ours {set(ours) - set(theirs)}, only theirs {set(theirs) - set(ours)}")
        for pkgid in sorted(set(ours) & set(theirs)):
            compared += 1
            a, b = flatten(canon(ours[pkgid], ignore)), flatten(canon(theirs[pkgid], ignore))
            if a != b:
                diff = "\n".join(difflib.unified_diff(b, a, "createrepo_c", "caprepo", lineterm="", n=0))
                problems.append(f"{kind} {pkgid}:\n{diff}")
    for p in problems:
        print(p)
    print(f"compared {compared} records, {len(problems)} differences")
    sys.exit(1 if problems or compared == 0 else 0)


if __name__ == "__main__":
    main()
