#!/usr/bin/env python3
"""Three `caprepo serve` daemons on one bucket of a moto S3 server on loopback: what an idle
daemon costs the object store, how fast a change on one daemon reaches another, and upload
throughput with one, two and three daemons writing.

Usage: bench/changelog.py [--cells 100,400,1200,2400] [--caprepo target/release/caprepo]
                          [--before /work/main/target/release/caprepo] [--uploads 50] [--before-uploads 10]
                          [--repo-adds 5] [--idle-seconds 30] [--throughput-uploads 40 (0: skip)]
                          [--work /tmp/caprepo-changelog] [--json results.jsonl]

For each number of cells (suites x 4 components x architectures, one package imported into
every cell so each cell ref exists) it starts a fresh moto, fills a bucket, and for each binary
(--caprepo, and --before if given) starts three daemons, each talking to moto through its own
counting HTTP proxy written here, so requests are counted at the S3 server's door per daemon:
  idle        requests per second per daemon over --idle-seconds, after the daemons' start scans
  propagate   --uploads uploads with --wait to daemon A, each then timed until daemon C serves
              a Packages file (the one its InRelease names) listing it; p50/p99/max
  repo-add    `caprepo repo add` from the CLI until daemon C serves the new repository's InRelease
  throughput  --throughput-uploads uploads with --wait, 2 clients per writing daemon, each daemon
              into cells of its own suite, with 1, 2 and 3 daemons writing; uploads/s and the cell
              and change-log compare-and-swap retries per upload from /metrics
Needs: python3 -m moto.server (pip install 'moto[server]'), a release build.
"""
import argparse
import http.client
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_debs import deb  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHES = ["amd64", "arm64", "armhf", "i386", "ppc64el", "s390x", "riscv64", "mips64el"]
COMPONENTS = ["main", "contrib", "non-free", "extra"]
ENV = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def http_get(url, timeout=10):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return 0, b""


class CountingProxy:
    """A reverse proxy in front of the S3 server that counts every request it forwards."""

    def __init__(self, upstream_port):
        self.count = 0
        self.lock = threading.Lock()
        proxy = self
        local = threading.local()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self):
                with proxy.lock:
                    proxy.count += 1
                body = None
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    body = b"".join(parts)
                elif self.headers.get("Content-Length"):
                    body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "transfer-encoding", "content-length")}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                for attempt in range(2):
                    if getattr(local, "conn", None) is None:
                        local.conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                    try:
                        local.conn.request(self.command, self.path, body=body, headers=headers)
                        reply = local.conn.getresponse()
                        data = reply.read()
                        break
                    except (http.client.HTTPException, OSError):
                        local.conn.close()
                        local.conn = None
                        if attempt:
                            raise
                self.send_response_only(reply.status, reply.reason)
                for k, v in reply.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length", "date", "server"):
                        self.send_header(k, v)
                length = reply.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A daemon killed mid-request resets its connection: nothing to report.
        self.server.handle_error = lambda request, address: None
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self):
        with self.lock:
            n, self.count = self.count, 0
        return n

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Moto:
    def __init__(self, work):
        self.port = free_port()
        self.log = open(os.path.join(work, "moto.log"), "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while http_get(f"http://127.0.0.1:{self.port}/", 2)[0] != 200:
            if time.time() > deadline:
                raise SystemExit("moto did not start")
            time.sleep(0.2)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def make_bucket(self, name):
        req = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        urllib.request.urlopen(req).read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.log.close()


def shape(cells):
    """Suites, architectures for about `cells` cells of 4 components."""
    arches = 5 if cells < 1200 else 6
    suites = max(1, round(cells / (4 * arches)))
    return suites, ARCHES[:arches]


def fill_store(caprepo, work, moto, cells, empty):
    bucket = "farm"
    moto.make_bucket(bucket)
    data = os.path.join(work, "data0")
    run([caprepo, "init", "--data", data, "--no-passphrase", "--s3-bucket", bucket,
         "--s3-endpoint", moto.endpoint, "--s3-allow-http"])
    suites, arches = shape(cells)
    suite_names = [f"s{i:03d}" for i in range(suites)]
    run([caprepo, "repo", "add", "--data", data, "apt", "farm", "--suites", ",".join(suite_names),
         "--components", ",".join(COMPONENTS), "--architectures", ",".join(arches)])
    started = time.time()
    jobs = []
    for suite in suite_names if not empty else ():
        for component in COMPONENTS:
            debs = os.path.join(work, "fill", suite, component)
            os.makedirs(debs)
            for arch in arches:
                name = f"fill-{suite}-{component}"
                with open(os.path.join(debs, f"{name}_1.0-1_{arch}.deb"), "wb") as f:
                    f.write(deb(name, "1.0-1", arch))
            jobs.append([caprepo, "import", "--data", data, f"apt/farm/dists/{suite}/{component}", debs])
    # Imports into distinct suites run side by side (each is mostly waiting on the S3 server),
    # sharing one agent: each would otherwise start its own on the data dir's one socket.
    socket_path = os.path.join(work, "fill-agent.sock")
    agent = subprocess.Popen([caprepo, "agent", "--data", data, "--socket", socket_path, "--exit-on-stdin-eof"],
                             stdin=subprocess.PIPE, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not os.path.exists(socket_path):
        time.sleep(0.05)
    config = os.path.join(data, "caprepo.toml")
    with open(config) as f:
        plain = f.read()
    with open(config, "w") as f:
        f.write(plain.replace("[agent]\n", f'[agent]\nsocket = "{socket_path}"\n'))
    lock = threading.Lock()
    failed = []

    def importer():
        while True:
            with lock:
                if not jobs:
                    return
                job = jobs.pop()
            try:
                run(job)
            except subprocess.CalledProcessError as e:
                failed.append(e.stderr.decode())

    threads = [threading.Thread(target=importer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    agent.stdin.close()
    agent.wait()
    with open(config, "w") as f:
        f.write(plain)
    if failed:
        raise SystemExit("filling failed: " + failed[0])
    print(f"  {'defined' if empty else 'filled'} {len(suite_names) * len(COMPONENTS) * len(arches)} cells "
          f"({len(suite_names)} suites x {len(COMPONENTS)} components x {len(arches)} architectures) "
          f"in {time.time() - started:.0f} s", flush=True)
    return data, suite_names, arches


class Daemon:
    def __init__(self, caprepo, base_data, work, name, moto_port):
        self.data = os.path.join(work, name)
        shutil.rmtree(self.data, ignore_errors=True)
        shutil.copytree(base_data, self.data, ignore=shutil.ignore_patterns("run", "spool", "*.sock"))
        self.proxy = CountingProxy(moto_port)
        config = os.path.join(self.data, "caprepo.toml")
        with open(config) as f:
            text = f.read()
        text = re.sub(r'endpoint = "[^"]*"', f'endpoint = "http://127.0.0.1:{self.proxy.port}"', text)
        with open(config, "w") as f:
            f.write(text)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(work, f"{name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([caprepo, "serve", "--data", self.data, "--listen", f"127.0.0.1:{self.port}"],
                                     env=dict(ENV, CAPREPO_LOG="info"), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while http_get(f"{self.url}/healthz", 2)[0] != 200:
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"daemon {name} did not start; see {self.log_path}")
            time.sleep(0.1)

    def metrics(self):
        _, body = http_get(f"{self.url}/metrics")
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.proxy.close()


def settle(daemons, quiet_seconds=3.0, limit=120):
    """Waits until the daemons' start work is done: a window in which each made few requests."""
    started = time.time()
    for d in daemons:
        d.proxy.take()
    while time.time() - started < limit:
        time.sleep(quiet_seconds)
        counts = [d.proxy.take() for d in daemons]
        if all(c <= 2 * quiet_seconds for c in counts):
            return time.time() - started
    return time.time() - started


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))]


def cap(caprepo, data, scope):
    return run([caprepo, "cap", "issue", "--data", data, "--scope", scope, "--rights", "upload",
                "--expires", "2h"]).stdout.decode().strip()


def upload(caprepo, daemon, token, path, wait=True):
    cmd = [caprepo, "upload", "--server", daemon.url, "--cap", token] + (["--wait"] if wait else []) + [path]
    subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def served(daemon, suite, component, arch, package):
    status, body = http_get(f"{daemon.url}/farm/dists/{suite}/{component}/binary-{arch}/Packages", 5)
    return status == 200 and f"Package: {package}\n".encode() in body


def measure(caprepo, label, base_data, work, moto, cells, suites, arches, args):
    print(f"  [{label}] starting three daemons", flush=True)
    daemons = [Daemon(caprepo, base_data, work, f"{label}-{n}", moto.port) for n in "abc"]
    result = {"label": label, "cells": cells}
    try:
        # Main before the change log never goes quiet: it reads every cell head each second.
        result["settle_s"] = round(settle(daemons, limit=120 if label == "after" else 30), 1)
        for d in daemons:
            d.proxy.take()
        time.sleep(args.idle_seconds)
        rates = [d.proxy.take() / args.idle_seconds for d in daemons]
        result["idle_per_daemon"] = [round(r, 2) for r in rates]
        print(f"  [{label}] idle requests/s per daemon: {result['idle_per_daemon']}", flush=True)

        a, c = daemons[0], daemons[2]
        debs = os.path.join(work, f"{label}-debs")
        os.makedirs(debs, exist_ok=True)
        token = cap(caprepo, base_data, f"apt/farm/dists/{suites[0]}/main/binary-{arches[0]}")
        after_wait, after_start = [], []
        rng = random.Random(7)
        uploads = args.uploads if label == "after" else args.before_uploads
        for i in range(uploads):
            name = f"prop-{label}-{i:03d}"
            path = os.path.join(debs, f"{name}_1.0-1_{arches[0]}.deb")
            with open(path, "wb") as f:
                f.write(deb(name, "1.0-1", arches[0]))
            time.sleep(rng.uniform(0, 1.5))
            t0 = time.perf_counter()
            upload(caprepo, a, token, path)
            t1 = time.perf_counter()
            while not served(c, suites[0], "main", arches[0], name):
                if time.perf_counter() - t1 > 60:
                    raise SystemExit(f"daemon C never served {name}")
                time.sleep(0.01)
            t2 = time.perf_counter()
            after_wait.append(t2 - t1)
            after_start.append(t2 - t0)
        if not uploads:
            return result
        result["propagation_after_wait"] = summary(after_wait)
        result["propagation_from_upload_start"] = summary(after_start)
        print(f"  [{label}] propagation A->C after upload --wait returned: {result['propagation_after_wait']}", flush=True)

        repo_add = []
        for i in range(args.repo_adds):
            name = f"added{label.replace('-', '')}{i}"
            t0 = time.perf_counter()
            run([caprepo, "repo", "add", "--data", base_data, "apt", name, "--suites", "stable",
                 "--components", "main", "--architectures", "amd64"])
            t1 = time.perf_counter()
            while http_get(f"{c.url}/{name}/dists/stable/InRelease", 5)[0] != 200:
                if time.perf_counter() - t1 > 120:
                    raise SystemExit(f"daemon C never served {name}")
                time.sleep(0.01)
            repo_add.append(time.perf_counter() - t1)
        result["repo_add_to_served"] = summary(repo_add)
        print(f"  [{label}] repo add (CLI) -> served by C: {result['repo_add_to_served']}", flush=True)

        result["throughput"] = []
        throughput_uploads = args.throughput_uploads if label == "after" else args.before_throughput_uploads
        for writers in (1, 2, 3) if throughput_uploads else ():
            before = [d.metrics() for d in daemons]
            jobs = []
            for w in range(writers):
                suite = suites[(w + 1) % len(suites)]
                for client in range(2):
                    arch = arches[client % len(arches)]
                    token = cap(caprepo, base_data, f"apt/farm/dists/{suite}/main/binary-{arch}")
                    jobs.append((daemons[w], token, suite, arch))
            per_job = max(1, throughput_uploads // len(jobs))
            files = []
            for j, (daemon, token, suite, arch) in enumerate(jobs):
                paths = []
                for k in range(per_job):
                    name = f"tp-{label}-{writers}-{j}-{k:03d}"
                    path = os.path.join(debs, f"{name}_1.0-1_{arch}.deb")
                    with open(path, "wb") as f:
                        f.write(deb(name, "1.0-1", arch))
                    paths.append(path)
                files.append((daemon, token, paths))
            errors = []

            def client(daemon, token, paths):
                for path in paths:
                    try:
                        upload(caprepo, daemon, token, path)
                    except subprocess.CalledProcessError as e:
                        errors.append(e.stderr.decode())

            threads = [threading.Thread(target=client, args=f) for f in files]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            after = [d.metrics() for d in daemons]
            total = per_job * len(jobs)

            def delta(key):
                return sum(x.get(key, 0) - y.get(key, 0) for x, y in zip(after, before))

            row = {"writers": writers, "uploads": total, "failed": len(errors),
                   "seconds": round(wall, 2), "uploads_per_s": round((total - len(errors)) / wall, 2),
                   "cell_conflicts_per_upload": round(delta("caprepo_cell_write_conflicts_total") / total, 3),
                   "log_conflicts_per_upload": round(delta("caprepo_change_log_append_conflicts_total") / total, 3)}
            result["throughput"].append(row)
            print(f"  [{label}] throughput: {row}", flush=True)
            if errors:
                print("    first error: " + errors[0][:300], flush=True)
    finally:
        for d in daemons:
            d.stop()
    return result


def summary(values):
    return {"n": len(values), "p50": round(statistics.median(values), 3),
            "p99": round(percentile(values, 99), 3), "max": round(max(values), 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="100,400,1200,2400")
    parser.add_argument("--caprepo", default=os.path.join(ROOT, "target", "release", "caprepo"))
    parser.add_argument("--before", help="another binary (main before the change log) to measure the same way")
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--before-uploads", type=int, default=10,
                        help="uploads timed with --before (it takes seconds each on a large bucket)")
    parser.add_argument("--repo-adds", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--throughput-uploads", type=int, default=40, help="0: skip throughput")
    parser.add_argument("--before-throughput-uploads", type=int, default=12)
    parser.add_argument("--work", default="/tmp/caprepo-changelog")
    parser.add_argument("--empty", action="store_true",
                        help="define the cells but import nothing (cell refs absent; for idle-only runs at large sizes)")
    parser.add_argument("--json", help="append each result as a JSON line to this file")
    args = parser.parse_args()
    # A SIGTERM stops the daemons and moto through the finally blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    results = []
    for cells in [int(c) for c in args.cells.split(",")]:
        work = os.path.join(args.work, str(cells))
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        print(f"== {cells} cells", flush=True)
        moto = Moto(work)
        try:
            base, suites, arches = fill_store(args.caprepo, work, moto, cells, args.empty)
            binaries = [("after", args.caprepo)] + ([("before", args.before)] if args.before else [])
            for label, binary in binaries:
                result = measure(binary, label, base, work, moto, cells, suites, arches, args)
                results.append(result)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(result) + "\n")
        finally:
            moto.stop()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
