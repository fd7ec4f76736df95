#!/usr/bin/env python3
"""Side-by-side APT benchmarks: caprepo against reprepro, aptly and apt-ftparchive, and nginx for serving.

Usage: bench/run.py [--sizes 5000,20000] [--runs 3] [--work /tmp/caprepo-bench] [--write BENCHMARKS.md]

Every tool gets the same synthetic debs (bench/gen_debs.py) and signs with an Ed25519 key, the
algorithm of caprepo's default key, so the work compared is the same: a whole signed publish,
Contents on, that a client could fetch. Each number is the median of --runs runs; peak RSS is the
largest resident set of any process in the run (GNU time's %M, or VmHWM of the server).
Needs: a release build (cargo build --release), reprepro, aptly, apt-utils, gnupg, nginx, wrk.
"""
import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPREPO = os.path.join(ROOT, "target", "release", "caprepo")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def timed(shell_cmd, env=None, cwd=None):
    """Wall seconds and peak RSS (KiB) of a shell command, measured by GNU time."""
    out = "/tmp/caprepo-bench-time.txt"
    start = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out, "bash", "-ec", shell_cmd],
                   check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    with open(out) as f:
        rss_kib = int(f.read().split()[-1])
    return wall, rss_kib


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


class Peers:
    """A throwaway GnuPG home with an Ed25519 signing key, shared by the peer tools."""

    def __init__(self, work):
        self.gnupghome = os.path.join(work, "gnupg")
        shutil.rmtree(self.gnupghome, ignore_errors=True)
        os.makedirs(self.gnupghome, mode=0o700)
        self.env = dict(os.environ, GNUPGHOME=self.gnupghome)
        run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Bench <bench@localhost>",
             "ed25519", "sign", "never"], env=self.env, stderr=subprocess.DEVNULL)
        listing = run(["gpg", "--batch", "--with-colons", "--list-secret-keys"], env=self.env,
                      capture_output=True, text=True).stdout
        self.keyid = next(line.split(":")[4] for line in listing.splitlines() if line.startswith("sec"))


def caprepo_cold(work, debs):
    data = os.path.join(work, "caprepo")
    shutil.rmtree(data, ignore_errors=True)
    run([CAPREPO, "init", "--data", data, "--no-passphrase"], stdout=subprocess.DEVNULL)
    run([CAPREPO, "repo", "add", "--data", data, "apt", "big", "--suites", "stable",
         "--components", "main", "--architectures", "amd64"], stdout=subprocess.DEVNULL)
    return timed(f"{CAPREPO} import --data {data} apt/big/dists/stable/main {debs}")


def reprepro_setup(work, peers):
    base = os.path.join(work, "reprepro")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(os.path.join(base, "conf"))
    with open(os.path.join(base, "conf", "distributions"), "w") as f:
        f.write("Codename: stable\nComponents: main\nArchitectures: amd64\n"
                f"SignWith: {peers.keyid}\nContents: . .gz\n")
    return base


def reprepro_cold(work, debs, peers):
    base = reprepro_setup(work, peers)
    # xargs keeps the argument list within ARG_MAX; includedeb exports once per call.
    return timed(f"find {debs} -name '*.deb' -print0 | xargs -0 reprepro -b {base} includedeb stable",
                 env=peers.env)


def aptly_config(work):
    path = os.path.join(work, "aptly.conf")
    with open(path, "w") as f:
        f.write('{"rootDir": "%s", "gpgProvider": "gpg", "architectures": ["amd64"]}'
                % os.path.join(work, "aptly"))
    return path


def aptly_cold(work, debs, peers):
    shutil.rmtree(os.path.join(work, "aptly"), ignore_errors=True)
    conf = aptly_config(work)
    a = f"aptly -config={conf}"
    return timed(f"{a} repo create -distribution=stable -component=main big >/dev/null; "
                 f"{a} repo add big {debs} >/dev/null; "
                 f"{a} publish repo -batch -gpg-key={peers.keyid} big >/dev/null", env=peers.env)


def ftparchive_script(base, keyid):
    b = f"{base}/dists/stable/main/binary-amd64"
    return (f"cd {base}; mkdir -p {b}; "
            f"apt-ftparchive packages pool > {b}/Packages; gzip -9kf {b}/Packages; xz -kf {b}/Packages; "
            f"apt-ftparchive contents pool > dists/stable/main/Contents-amd64; "
            f"gzip -9kf dists/stable/main/Contents-amd64; "
            f"apt-ftparchive -o APT::FTPArchive::Release::Codename=stable "
            f"-o APT::FTPArchive::Release::Components=main -o APT::FTPArchive::Release::Architectures=amd64 "
            f"release dists/stable > Release.tmp; mv Release.tmp dists/stable/Release; "
            f"gpg --batch --yes -u {keyid} --clearsign -o dists/stable/InRelease dists/stable/Release; "
            f"gpg --batch --yes -u {keyid} -abs -o dists/stable/Release.gpg dists/stable/Release")


def ftparchive_cold(work, debs, peers):
    base = os.path.join(work, "ftparchive")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(os.path.join(base, "pool"))
    os.symlink(debs, os.path.join(base, "pool", "main"))
    return timed(ftparchive_script(base, peers.keyid), env=peers.env)


class CaprepoServer:
    def __init__(self, work):
        self.data = os.path.join(work, "caprepo")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([CAPREPO, "serve", "--data", self.data, "--listen",
                                      f"127.0.0.1:{self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"{self.url}/big/dists/stable/InRelease")

    def peak_rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def add_one(work, extras, peers):
    """Adds one package at a time to the N-package suites the cold runs left behind."""
    results = {}
    server = CaprepoServer(work)
    try:
        cap = run([CAPREPO, "cap", "issue", "--data", server.data, "--scope",
                   "apt/big/dists/stable/main/binary-amd64", "--rights", "upload", "--expires", "1h"],
                  capture_output=True, text=True).stdout.strip()
        env = dict(os.environ, CAPREPO_CAP=cap)
        times = []
        for deb in extras:
            wall, _ = timed(f"{CAPREPO} upload --server {server.url} --wait {deb}", env=env)
            times.append(wall)
        results["caprepo"] = (statistics.median(times), server.peak_rss_kib())
    finally:
        server.stop()

    base = os.path.join(work, "reprepro")
    samples = [timed(f"reprepro -b {base} includedeb stable {deb}", env=peers.env) for deb in extras]
    results["reprepro"] = median_sample(samples)

    a = f"aptly -config={os.path.join(work, 'aptly.conf')}"
    samples = [timed(f"{a} repo add big {deb} >/dev/null; {a} publish update -batch "
                     f"-gpg-key={peers.keyid} stable >/dev/null", env=peers.env) for deb in extras]
    results["aptly"] = median_sample(samples)

    # apt-ftparchive has no incremental mode: adding a package means regenerating everything.
    base = os.path.join(work, "ftparchive")
    samples = []
    for deb in extras:
        os.makedirs(os.path.join(base, "pool", "extra"), exist_ok=True)
        shutil.copy(deb, os.path.join(base, "pool", "extra"))
        samples.append(timed(ftparchive_script(base, peers.keyid), env=peers.env))
    results["apt-ftparchive"] = median_sample(samples)
    return results


def median_sample(samples):
    return statistics.median(s[0] for s in samples), max(s[1] for s in samples)


def wrk_rps(url):
    out = run(["wrk", "-t2", "-c32", "-d5s", url], capture_output=True, text=True).stdout
    return float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))


def serving(work):
    """wrk against caprepo and against nginx serving byte-identical copies of the same three files."""
    server = CaprepoServer(work)
    docroot = os.path.join(work, "nginx-root")
    shutil.rmtree(docroot, ignore_errors=True)
    packages = urllib.request.urlopen(f"{server.url}/big/dists/stable/main/binary-amd64/Packages").read()
    pool_path = next(line.split(b" ", 1)[1].decode() for line in packages.splitlines()
                     if line.startswith(b"Filename: "))
    paths = {"InRelease": "big/dists/stable/InRelease",
             "Packages.xz": "big/dists/stable/main/binary-amd64/Packages.xz",
             "pool .deb": f"big/{pool_path}"}
    for rel in paths.values():
        target = os.path.join(docroot, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(urllib.request.urlopen(f"{server.url}/{rel}").read())
    nginx_port = free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"worker_processes auto; daemon off; pid {work}/nginx.pid; error_log /dev/null;\n"
                f"events {{ worker_connections 1024; }}\n"
                f"http {{ access_log off; sendfile on; server {{ listen 127.0.0.1:{nginx_port}; "
                f"root {docroot}; }} }}\n")
    nginx = subprocess.Popen(["nginx", "-c", conf, "-p", work], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    rows = []
    try:
        wait_http(f"http://127.0.0.1:{nginx_port}/{paths['InRelease']}")
        for label, rel in paths.items():
            rows.append((label, wrk_rps(f"{server.url}/{rel}"),
                         wrk_rps(f"http://127.0.0.1:{nginx_port}/{rel}")))
        rss = server.peak_rss_kib()
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)
        server.stop()
    return rows, rss


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return f"{cpu}, {os.cpu_count()} cores, {mem // 1024 // 1024} GiB, {platform.platform()}"


def fmt_row(tool, secs, rss_kib, caprepo_secs):
    ratio = "1" if tool == "caprepo" else f"{caprepo_secs / secs:.3g}"
    return f"| {tool} | {secs:.3f} | {ratio} | {rss_kib / 1024:.0f} |"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="5000,20000")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--work", default="/tmp/caprepo-bench")
    p.add_argument("--write", help="replace the generated section of this markdown file")
    args = p.parse_args()
    if not os.access(CAPREPO, os.X_OK):
        sys.exit(f"{CAPREPO} is missing: run `cargo build --release` first")
    os.makedirs(args.work, exist_ok=True)
    peers = Peers(args.work)
    lines = [f"Machine: {machine()}. Command: `python3 bench/run.py --sizes {args.sizes} "
             f"--runs {args.runs}`. Medians of {args.runs} runs; ratio = caprepo time / peer time "
             f"(below 1 means caprepo is faster); RSS is the peak of the run in MiB.", ""]
    sizes = [int(s) for s in args.sizes.split(",")]
    for n in sizes:
        debs = os.path.join(args.work, f"debs-{n}")
        if not os.path.isdir(debs) or len(os.listdir(debs)) != n:
            shutil.rmtree(debs, ignore_errors=True)
            run([sys.executable, os.path.join(ROOT, "bench", "gen_debs.py"), debs, str(n)],
                stdout=subprocess.DEVNULL)
        extras_dir = os.path.join(args.work, f"extra-{n}")
        shutil.rmtree(extras_dir, ignore_errors=True)
        run([sys.executable, os.path.join(ROOT, "bench", "gen_debs.py"), extras_dir, str(args.runs),
             "--prefix", "extra"], stdout=subprocess.DEVNULL)
        extras = sorted(os.path.join(extras_dir, f) for f in os.listdir(extras_dir))

        cold = {}
        for tool, fn in [("caprepo", lambda: caprepo_cold(args.work, debs)),
                         ("reprepro", lambda: reprepro_cold(args.work, debs, peers)),
                         ("aptly", lambda: aptly_cold(args.work, debs, peers)),
                         ("apt-ftparchive", lambda: ftparchive_cold(args.work, debs, peers))]:
            samples = [fn() for _ in range(args.runs)]
            cold[tool] = median_sample(samples)
            print(f"cold {n} {tool}: {cold[tool][0]:.3f}s", file=sys.stderr)
        lines += [f"### Cold publish, {n} debs, Contents on, signed", "",
                  "| tool | seconds | ratio | peak RSS MiB |", "|---|---|---|---|"]
        lines += [fmt_row(t, s, r, cold["caprepo"][0]) for t, (s, r) in cold.items()]
        lines.append("")

        one = add_one(args.work, extras, peers)
        for tool, (s, _) in one.items():
            print(f"add one {n} {tool}: {s:.3f}s", file=sys.stderr)
        lines += [f"### Add one deb to the {n}-deb suite, until the signed index includes it", "",
                  "| tool | seconds | ratio | peak RSS MiB |", "|---|---|---|---|"]
        lines += [fmt_row(t, s, r, one["caprepo"][0]) for t, (s, r) in one.items()]
        lines.append("caprepo's RSS here is the server's (`caprepo serve`) peak over the uploads.")
        lines.append("")

    rows, rss = serving(args.work)
    lines += [f"### Serving, {sizes[-1]}-deb suite, wrk -t2 -c32 -d5s on loopback", "",
              "| file | caprepo req/s | nginx req/s | caprepo/nginx |", "|---|---|---|---|"]
    lines += [f"| {label} | {c:.0f} | {n:.0f} | {c / n:.2f} |" for label, c, n in rows]
    lines += ["", f"caprepo serve peak RSS over the wrk runs: {rss / 1024:.0f} MiB.", ""]

    table = "\n".join(lines)
    print(table)
    if args.write:
        begin, end = "<!-- bench/run.py begin -->", "<!-- bench/run.py end -->"
        text = open(args.write).read()
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        with open(args.write, "w") as f:
            f.write(f"{head}{begin}\n{table}\n{end}{tail}")


if __name__ == "__main__":
    main()
