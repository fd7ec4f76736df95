#!/usr/bin/env python3
"""What gc beside a busy daemon costs the daemon's writers.

For each size N: a suite of N generated debs (imported), a tenth of them removed (garbage),
then `caprepo gc --grace 0s --keep-generations 1 --reader-window 0s` runs from the CLI while
a client uploads one new package after another with `--wait`. Reports the gc's wall time,
how long the daemon's writes were paused (its log: "gc done; writes resume" paused_ms), and
the upload latency p50/max before gc and while it ran.

    python3 bench/gc_pause.py --caprepo target/release/caprepo --sizes 5000,20000
"""

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def upload(caprepo, url, cap, path):
    started = time.monotonic()
    env = dict(os.environ, CAPREPO_CAP=cap)
    subprocess.run([caprepo, "upload", "--server", url, "--wait", path], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.monotonic() - started


def measure(caprepo, work, n):
    root = os.path.join(work, str(n))
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    data = os.path.join(root, "data")
    run([caprepo, "init", "--data", data, "--no-passphrase"])
    run([caprepo, "repo", "add", "--data", data, "apt", "g", "--suites", "stable", "--components", "main",
         "--architectures", "amd64"])
    debs = os.path.join(root, "debs")
    run([sys.executable, os.path.join(HERE, "gen_debs.py"), debs, str(n), "--prefix", "seed"])
    run([caprepo, "import", "--data", data, "apt/g/dists/stable/main", debs])
    fresh = os.path.join(root, "fresh")
    run([sys.executable, os.path.join(HERE, "gen_debs.py"), fresh, "200", "--prefix", "fresh"])
    fresh_files = sorted(os.path.join(fresh, f) for f in os.listdir(fresh))
    port = free_port()
    log = open(os.path.join(root, "serve.log"), "w")
    server = subprocess.Popen([caprepo, "serve", "--data", data, "--listen", f"127.0.0.1:{port}"],
                              stdout=log, stderr=log, env=dict(os.environ, CAPREPO_LOG="info"))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                subprocess.run(["curl", "-fsS", f"{url}/healthz"], check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                break
            except subprocess.CalledProcessError:
                time.sleep(0.1)
        cap = run([caprepo, "cap", "issue", "--data", data, "--scope", "apt/g/dists/stable/main/binary-amd64",
                   "--rights", "upload", "--expires", "1h"]).stdout.strip()
        # Garbage: a tenth of the suite removed (their pool files, chunks and fragments go).
        names = [f"seed-{i:06d}" for i in range(0, n, 10)]
        for start in range(0, len(names), 500):
            run([caprepo, "rm", "--data", data, "apt/g/stable", *names[start:start + 500]])
        time.sleep(2)
        before = [upload(caprepo, url, cap, f) for f in fresh_files[:20]]
        during = []
        done = threading.Event()

        def uploader():
            for f in fresh_files[20:]:
                if done.is_set():
                    return
                during.append(upload(caprepo, url, cap, f))

        thread = threading.Thread(target=uploader)
        thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        gc = run([caprepo, "gc", "--data", data, "--grace", "0s", "--keep-generations", "1",
                  "--reader-window", "0s"])
        gc_secs = time.monotonic() - started
        time.sleep(0.5)
        done.set()
        thread.join()
        log.flush()
        text = open(os.path.join(root, "serve.log")).read()
        paused = [int(m) for m in re.findall(r"paused_ms=(\d+)", text)]
        freed = re.search(r"freed (\d+) blob\(s\), (\d+) bytes", gc.stdout)
        return {
            "n": n,
            "gc_secs": gc_secs,
            "freed": int(freed.group(1)) if freed else 0,
            "freed_bytes": int(freed.group(2)) if freed else 0,
            "paused_ms": max(paused) if paused else None,
            "before_p50": statistics.median(before),
            "before_max": max(before),
            "during_p50": statistics.median(during) if during else None,
            "during_max": max(during) if during else None,
            "during_n": len(during),
        }
    finally:
        server.terminate()
        server.wait()
        log.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--caprepo", default=os.path.join(HERE, "..", "target", "release", "caprepo"))
    p.add_argument("--sizes", default="5000,20000")
    p.add_argument("--work", default="/tmp/caprepo-gc-pause")
    args = p.parse_args()
    rows = [measure(os.path.abspath(args.caprepo), args.work, int(n)) for n in args.sizes.split(",")]
    print("| packages | gc s | freed | writes paused ms | upload p50 / max before s | "
          "upload p50 / max during gc s (uploads) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        during = (f"{r['during_p50']:.3f} / {r['during_max']:.3f} ({r['during_n']})"
                  if r["during_p50"] is not None else "-")
        print(f"| {r['n']} | {r['gc_secs']:.2f} | {r['freed']} ({r['freed_bytes'] / 1e6:.1f} MB) | "
              f"{r['paused_ms']} | {r['before_p50']:.3f} / {r['before_max']:.3f} | {during} |")


if __name__ == "__main__":
    main()
