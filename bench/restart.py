#!/usr/bin/env python3
"""The first upload after `caprepo serve` restarts, against the uploads after it, for one or more
caprepo binaries side by side (A/B alternated, since this VM is shared and noisy).

One N-package suite (APT) or release (RPM) is imported once, by the last binary given; each round
copies it, and for each binary: starts `serve`, uploads one package and stops it (so the data dir
holds whatever that binary writes down for the next start), then starts `serve` again and times
`caprepo upload --wait` of the first package after the start and of --uploads more.

  python3 bench/restart.py --kind rpm --packages 20000 --caprepo A=/tmp/caprepo-A,B=/tmp/caprepo-B
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402


def serve_and_upload(binary, data, layout, packages):
    """Starts `serve` of DATA with BINARY, uploads PACKAGES one at a time, stops it: each upload's
    wall seconds and the server's peak RSS (KiB)."""
    bench.CAPREPO = binary
    server = bench.CaprepoServer(None, data, layout)
    try:
        env = server.upload_env()
        times = [bench.timed(f"{binary} upload --server {server.url} --wait {p}", env=env)[0]
                 for p in packages]
        return times, server.peak_rss_kib()
    finally:
        server.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["deb", "rpm"], default="rpm")
    p.add_argument("--packages", type=int, default=20000)
    p.add_argument("--uploads", type=int, default=9, help="uploads timed after the first")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--caprepo", required=True, help="LABEL=PATH,LABEL=PATH: the binaries to compare")
    p.add_argument("--work", default="/tmp/caprepo-restart-bench")
    args = p.parse_args()
    binaries = [tuple(item.split("=", 1)) for item in args.caprepo.split(",")]
    layout = bench.RPM if args.kind == "rpm" else bench.APT
    os.makedirs(args.work, exist_ok=True)
    packages = bench.gen_packages(os.path.join(args.work, f"{args.kind}s-{args.packages}"),
                                  args.packages, kind=args.kind)
    per_run = args.uploads + 2
    extras = bench.extra_packages(args.work, args.packages, args.rounds * len(binaries) * per_run,
                                  kind=args.kind)
    base = os.path.join(args.work, "base")
    bench.CAPREPO = binaries[-1][1]
    seconds = bench.caprepo_cold(args.work, packages, base, layout)[0]
    print(f"imported {args.packages} {args.kind}s in {seconds:.1f} s", file=sys.stderr)

    results = {label: [] for label, _ in binaries}
    for round_ in range(args.rounds):
        order = binaries if round_ % 2 == 0 else list(reversed(binaries))
        for label, binary in order:
            data = os.path.join(args.work, "run")
            shutil.rmtree(data, ignore_errors=True)
            subprocess.run(["cp", "-a", base, data], check=True)
            mine, extras = extras[:per_run], extras[per_run:]
            serve_and_upload(binary, data, layout, mine[:1])
            times, rss = serve_and_upload(binary, data, layout, mine[1:])
            first, steady = times[0], statistics.median(times[1:])
            results[label].append((first, steady, rss))
            print(f"round {round_} {label}: first {first:.3f} s, then median {steady:.3f} s, "
                  f"VmHWM {rss / 1024:.0f} MiB", file=sys.stderr)

    print(f"| binary | first upload after restart s | median of the next {args.uploads} s | "
          f"first / median | VmHWM MiB |")
    print("|---|---|---|---|---|")
    for label, rows in results.items():
        first = statistics.median(r[0] for r in rows)
        steady = statistics.median(r[1] for r in rows)
        rss = max(r[2] for r in rows) / 1024
        print(f"| {label} | {first:.3f} | {steady:.3f} | {first / steady:.2f}x | {rss:.0f} |")


if __name__ == "__main__":
    main()
