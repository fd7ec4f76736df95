#!/usr/bin/env python3
"""Side-by-side benchmarks: caprepo against reprepro, aptly and apt-ftparchive for APT, nginx for
serving, createrepo_c for RPM; then caprepo alone: upload throughput against sha256sum, concurrent
uploaders, and growth to 100,000 debs.

Usage: bench/run.py [--sizes 5000,20000] [--growth-sizes 100000] [--runs 3] [--only peers,serving,...]
                    [--caprepo target/release/caprepo] [--work /tmp/caprepo-bench] [--write BENCHMARKS.md]

Workloads (--only takes a comma-separated subset; the default runs them all):
  peers       cold publish and add one, for each of --sizes, against reprepro, aptly, apt-ftparchive
  serving     wrk against caprepo and nginx (uses the suite `peers` left in WORK/caprepo)
  rpm         RPM cold publish and add one, for each of --sizes, against createrepo_c
  upload      one 1 GiB .deb over loopback HTTP, against sha256sum of the same file
  concurrent  16 `caprepo upload` processes sharing 800 small debs
  growth      caprepo alone at each of --growth-sizes: cold import, add one, serve RSS

Every tool gets the same synthetic debs (bench/gen_debs.py), or rpms (bench/gen_rpms.py), and signs
with an Ed25519 key, the algorithm of caprepo's default key, so the work compared is the same: a
whole signed publish (for APT, Contents on) that a client could fetch. Each number is the median of
--runs runs; peak RSS is the largest resident set of any process in the run (GNU time's %M, or VmHWM
of the server).
--write replaces the whole generated section, so write only from a run of every workload.
Needs: a release build (cargo build --release), reprepro, aptly, apt-utils, gnupg, nginx, wrk, dpkg-deb,
createrepo-c.
"""
import argparse
import collections
import lzma
import math
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
    out = f"/tmp/caprepo-bench-time-{os.getpid()}.txt"
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


GENERATORS = {"deb": "gen_debs.py", "rpm": "gen_rpms.py"}


def real_fixtures(kind):
    """The real packages in fixtures/ that fit the benchmark repositories: every deb (amd64 and all),
    and the x86_64 and noarch rpms. They bring what synthetic packages lack: big file lists (gobjc),
    several versions of one name, an lzma payload."""
    if kind == "deb":
        folder, keep = os.path.join(ROOT, "fixtures", "debs"), (".deb",)
    else:
        folder, keep = os.path.join(ROOT, "fixtures", "rpms"), (".x86_64.rpm", ".noarch.rpm")
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(keep))


def gen_packages(outdir, count, prefix=None, kind="deb", with_fixtures=False):
    """Writes COUNT synthetic packages of KIND (deb or rpm) into OUTDIR, plus the real ones from
    fixtures/ if asked, unless a complete set from an earlier run is there: generating 20,000 takes
    seconds to minutes, and every workload reuses them."""
    real = real_fixtures(kind) if with_fixtures else []
    if os.path.isdir(outdir) and len(os.listdir(outdir)) == count + len(real):
        return outdir
    shutil.rmtree(outdir, ignore_errors=True)
    cmd = [sys.executable, os.path.join(ROOT, "bench", GENERATORS[kind]), outdir, str(count)]
    run(cmd + (["--prefix", prefix] if prefix else []), stdout=subprocess.DEVNULL)
    for path in real:
        shutil.copy(path, outdir)
    return outdir


def extra_packages(work, n, runs, kind="deb"):
    """The packages add-one uploads into the N-package suite, one per run, named apart from its own."""
    extras_dir = os.path.join(work, f"extra-{n}" if kind == "deb" else f"extra-{kind}s-{n}")
    shutil.rmtree(extras_dir, ignore_errors=True)
    gen_packages(extras_dir, runs, prefix="extra", kind=kind)
    return sorted(os.path.join(extras_dir, f) for f in os.listdir(extras_dir))


class Layout(collections.namedtuple("Layout", "repo_add import_scope cap_scope ready")):
    """What differs between caprepo's APT and RPM runs: the `repo add` arguments, the `import` scope,
    the scope of the upload cap, and the signed file that answers once `serve` is up."""

APT = Layout(["apt", "big", "--suites", "stable", "--components", "main", "--architectures", "amd64"],
             "apt/big/dists/stable/main", "apt/big/dists/stable/main/binary-amd64",
             "big/dists/stable/InRelease")
# Packages unsigned, so the work matches createrepo_c's, which signs nothing; RPM_SIGNED is the default.
RPM = Layout(["rpm", "big", "--releases", "40", "--architectures", "x86_64", "--no-sign-packages"],
             "rpm/big/40", "rpm/big/40/x86_64", "big/40/x86_64/repodata/repomd.xml")
RPM_SIGNED = RPM._replace(repo_add=[a for a in RPM.repo_add if a != "--no-sign-packages"])


def caprepo_fresh(data, layout=APT):
    """An empty data dir with one repository, big: by default APT, suite stable, component main, amd64."""
    shutil.rmtree(data, ignore_errors=True)
    run([CAPREPO, "init", "--data", data, "--no-passphrase"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    run([CAPREPO, "repo", "add", "--data", data, *layout.repo_add], stdout=subprocess.DEVNULL)


def caprepo_cold(work, packages, data=None, layout=APT):
    """`caprepo import` of the directory PACKAGES into a fresh data dir: store, index, sign, publish."""
    data = data or os.path.join(work, "caprepo")
    caprepo_fresh(data, layout)
    return timed(f"{CAPREPO} import --data {data} {layout.import_scope} {packages}")


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
    """`caprepo serve` on a free loopback port, over WORK/caprepo unless another data dir is given;
    LAYOUT says which signed file to wait for and which cell the upload cap is for."""

    def __init__(self, work, data=None, layout=APT):
        self.data = data or os.path.join(work, "caprepo")
        self.layout = layout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([CAPREPO, "serve", "--data", self.data, "--listen",
                                      f"127.0.0.1:{self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_http(f"{self.url}/{layout.ready}")
        except BaseException:
            self.stop()
            raise

    def peak_rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))

    def upload_env(self):
        """The environment for `caprepo upload`: an upload cap in CAPREPO_CAP keeps it out of ps."""
        cap = run([CAPREPO, "cap", "issue", "--data", self.data, "--scope",
                   self.layout.cap_scope, "--rights", "upload", "--expires", "1h"],
                  capture_output=True, text=True).stdout.strip()
        return dict(os.environ, CAPREPO_CAP=cap)

    def get(self, rel):
        return urllib.request.urlopen(f"{self.url}/{rel}", timeout=60).read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


# Seconds of the first upload after each `caprepo serve` start, by data dir: reported beside the
# add-one tables, not in their medians.
FIRST_UPLOADS = {}


def caprepo_add_one(server, extras):
    """Median seconds of `caprepo upload --wait` of one package: from the command's start to the signed
    index listing it. The first upload after `serve` starts is timed apart (FIRST_UPLOADS): its publish
    lays the index files out from scratch and loads every fragment, which is a restart's cost, paid
    once by a server that then runs for weeks, not an upload's."""
    env = server.upload_env()
    times = [timed(f"{CAPREPO} upload --server {server.url} --wait {deb}", env=env)[0] for deb in extras]
    FIRST_UPLOADS[server.data] = times[0]
    return statistics.median(times[1:])


def first_upload_note(data):
    return (f"caprepo's first upload after `serve` started, which lays the files out from scratch and is "
            f"not in the median: {FIRST_UPLOADS[data]:.3f} s.")


def caprepo_served_add_one(work, extras, data=None, layout=APT):
    """Add one against a `caprepo serve` started for it over DATA, stopped after: the median seconds
    and the server's peak RSS (KiB), which includes loading the N-package suite."""
    server = CaprepoServer(work, data, layout)
    try:
        return caprepo_add_one(server, extras), server.peak_rss_kib()
    finally:
        server.stop()


def caprepo_uploads(runs):
    """How many packages caprepo's add one uploads: its first upload after the server starts is timed
    apart, and the median is of at least 19 more. Each takes a few tens of milliseconds, where the
    machine's jitter is about 10 ms: 3 samples made the growth ratio noise (17/32/25 ms in one run),
    and 9 still moved it by 10 ms between runs (one 20,000-deb suite: 16 to 38 ms per upload)."""
    return max(runs, 19) + 1


def add_one(work, extras, peers, runs):
    """Adds one package at a time to the N-package suites the cold runs left behind: caprepo every
    extra, each peer the first --runs + 1 (they take seconds each)."""
    results = {"caprepo": caprepo_served_add_one(work, extras)}
    extras = extras[:runs + 1]

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


def createrepo_c_script(base, keyid, update=False):
    """createrepo_c over BASE, then the signature it leaves to others: repomd.xml.asc, which caprepo
    writes with every publish. --no-database, since caprepo writes no sqlite either."""
    return (f"createrepo_c --no-database {'--update ' if update else ''}{base}; "
            f"gpg --batch --yes -u {keyid} --detach-sign --armor -o {base}/repodata/repomd.xml.asc "
            f"{base}/repodata/repomd.xml")


def createrepo_c_cold(work, rpms, peers):
    """A repository over RPMS from nothing: BASE/pool links to the rpms, so nothing is copied, and
    the repodata of the last run stays in BASE for the add-one runs' --update."""
    base = os.path.join(work, "createrepo_c")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    os.symlink(rpms, os.path.join(base, "pool"))
    return timed(createrepo_c_script(base, peers.keyid), env=peers.env)


def createrepo_c_add_one(work, extras, peers):
    """One rpm more per run: copied into BASE/extra untimed, then `createrepo_c --update`, createrepo_c's
    incremental mode: it reuses the metadata of rpms whose size and mtime are unchanged, but still walks
    the whole directory and writes every XML file anew."""
    base = os.path.join(work, "createrepo_c")
    os.makedirs(os.path.join(base, "extra"), exist_ok=True)
    samples = []
    for rpm in extras:
        shutil.copy(rpm, os.path.join(base, "extra"))
        samples.append(timed(createrepo_c_script(base, peers.keyid, update=True), env=peers.env))
    return median_sample(samples)


def createrepo_c_version():
    """For the table's note: --update's speed and the defaults (sqlite, compression) vary by version."""
    out = run(["createrepo_c", "--version"], capture_output=True, text=True).stdout
    return out.split()[1]  # "Version: 0.17.3 (Features: ...)"


RPM_SIGNED_LABEL = "caprepo, packages signed by the agent"


def rpm_data(work, layout):
    """The data dir a caprepo contender's cold runs leave behind for its add-one runs."""
    return os.path.join(work, "caprepo-rpm-signed" if layout is RPM_SIGNED else "caprepo-rpm")


def rpm_cold(args, n, rpms, peers):
    """Cold publish of RPMS by caprepo, createrepo_c, and caprepo signing every package, in that order."""
    cold = {}
    unsigned, signed = rpm_data(args.work, RPM), rpm_data(args.work, RPM_SIGNED)
    for tool, fn in [("caprepo", lambda: caprepo_cold(args.work, rpms, unsigned, RPM)),
                     ("createrepo_c", lambda: createrepo_c_cold(args.work, rpms, peers)),
                     (RPM_SIGNED_LABEL, lambda: caprepo_cold(args.work, rpms, signed, RPM_SIGNED))]:
        cold[tool] = median_sample([fn() for _ in range(args.runs)])
        print(f"rpm cold {n} {tool}: {cold[tool][0]:.3f}s", file=sys.stderr)
    return cold


def rpm_add_one(args, n, extras, peers):
    """Add one to the release each cold run left: caprepo by `caprepo upload --wait` to `caprepo serve`,
    createrepo_c by --update."""
    one = {}
    unsigned, signed = rpm_data(args.work, RPM), rpm_data(args.work, RPM_SIGNED)
    served = caprepo_served_add_one
    peer_extras = extras[:args.runs + 1]
    for tool, fn in [("caprepo", lambda: served(args.work, extras, unsigned, RPM)),
                     ("createrepo_c", lambda: createrepo_c_add_one(args.work, peer_extras, peers)),
                     (RPM_SIGNED_LABEL, lambda: served(args.work, extras, signed, RPM_SIGNED))]:
        one[tool] = fn()
        print(f"rpm add one {n} {tool}: {one[tool][0]:.3f}s", file=sys.stderr)
    return one


BIG_DEB_BYTES = 1 << 30


def big_deb(work):
    """A ~1 GiB .deb whose data is one file of random bytes, built once and kept under WORK.

    Random bytes, so no compression anywhere on the path can shrink the work. -Znone, so data.tar
    is stored as is: the server's inspection then reads through it once, as sha256sum does, rather
    than inflating gzip's stored blocks (-z1 cannot compress random data either)."""
    out = os.path.join(work, "big-deb")
    deb = os.path.join(out, "bigpkg_1.0-1_amd64.deb")
    if os.path.exists(deb) and os.path.getsize(deb) > BIG_DEB_BYTES:
        return deb
    shutil.rmtree(out, ignore_errors=True)
    root = os.path.join(out, "root")
    os.makedirs(os.path.join(root, "DEBIAN"))
    os.makedirs(os.path.join(root, "usr", "share", "bigpkg"))
    with open(os.path.join(root, "DEBIAN", "control"), "w") as f:
        f.write(f"Package: bigpkg\nVersion: 1.0-1\nArchitecture: amd64\n"
                f"Maintainer: caprepo bench <bench@caprepo.invalid>\nInstalled-Size: {BIG_DEB_BYTES // 1024}\n"
                f"Section: misc\nPriority: optional\nDescription: 1 GiB of random bytes\n"
                f" A package generated for caprepo's upload benchmark.\n")
    with open(os.path.join(root, "usr", "share", "bigpkg", "random.bin"), "wb") as f:
        for _ in range(BIG_DEB_BYTES // (16 << 20)):
            f.write(os.urandom(16 << 20))
    run(["dpkg-deb", "--root-owner-group", "-Znone", "--build", root, deb], stdout=subprocess.DEVNULL)
    shutil.rmtree(root)
    return deb


def hash_secs(tool, path):
    """Seconds for TOOL (a sha256 command) over a file already in the page cache: the floor any
    upload of it pays, since caprepo names every blob by its sha256."""
    run(["cat", path], stdout=subprocess.DEVNULL)  # warm the page cache for every contender
    return timed(f"{tool} {path}")


def upload_once(work, deb):
    """One upload of DEB into a fresh data dir, since caprepo stores identical content once: a second
    upload into the same store would hash the file and answer already-present.

    Returns the upload's wall seconds and the server's peak RSS (KiB)."""
    data = os.path.join(work, "upload-caprepo")
    caprepo_fresh(data)
    server = CaprepoServer(work, data)
    try:
        wall, _ = timed(f"{CAPREPO} upload --server {server.url} --wait {deb}", env=server.upload_env())
        return wall, server.peak_rss_kib()
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def upload_throughput(work, runs):
    """1 GiB over loopback HTTP against sha256sum of the same file; all from a hot page cache.

    Also times `openssl sha256`, when there is one: coreutils' sha256sum does not use the CPU's SHA
    extensions, caprepo's sha2 crate and OpenSSL do, so sha256sum alone flatters the ratio."""
    deb = big_deb(work)
    mib = os.path.getsize(deb) / (1 << 20)
    hashes = {"sha256sum": median_sample([hash_secs("sha256sum", deb) for _ in range(runs)])}
    if shutil.which("openssl"):
        hashes["openssl sha256"] = median_sample([hash_secs("openssl sha256", deb) for _ in range(runs)])
    up = median_sample([upload_once(work, deb) for _ in range(runs)])
    return mib, hashes, up


CONCURRENT_UPLOADERS = 16
CONCURRENT_DEBS = 800


def concurrent_once(work, debs):
    """16 `caprepo upload --wait` processes at once, each with its own share of DEBS in one
    invocation, into a fresh data dir; timed from the first start to the last exit.

    Checks the published Packages lists every deb, so a lost upload cannot pass for a fast one.
    Returns wall seconds and the server's peak RSS (KiB)."""
    data = os.path.join(work, "concurrent-caprepo")
    caprepo_fresh(data)
    server = CaprepoServer(work, data)
    try:
        env = server.upload_env()
        shares = [debs[i::CONCURRENT_UPLOADERS] for i in range(CONCURRENT_UPLOADERS)]
        start = time.perf_counter()
        procs = [subprocess.Popen([CAPREPO, "upload", "--server", server.url, "--wait", *share], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for share in shares]
        stderr = [p.communicate()[1] for p in procs]
        wall = time.perf_counter() - start
        failed = [err for p, err in zip(procs, stderr) if p.returncode != 0]
        if failed:
            raise RuntimeError(f"{len(failed)} uploaders failed; the first said: {failed[0][:2000]}")
        packages = server.get("big/dists/stable/main/binary-amd64/Packages")
        listed = sum(1 for line in packages.splitlines() if line.startswith(b"Package: "))
        if listed != len(debs):
            raise RuntimeError(f"Packages lists {listed} packages after uploading {len(debs)}")
        return wall, server.peak_rss_kib()
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def concurrent_uploads(work, runs):
    debs_dir = gen_packages(os.path.join(work, f"conc-{CONCURRENT_DEBS}"), CONCURRENT_DEBS, prefix="conc")
    debs = sorted(os.path.join(debs_dir, f) for f in os.listdir(debs_dir))
    return median_sample([concurrent_once(work, debs) for _ in range(runs)])


def fetch_like_apt(server, pool_files=5):
    """What an apt client of the suite fetches: InRelease, Packages.xz, Contents, a few pool files;
    so the serve RSS below includes answering for the whole suite's indices."""
    server.get("big/dists/stable/InRelease")
    packages = lzma.decompress(server.get("big/dists/stable/main/binary-amd64/Packages.xz"))
    server.get("big/dists/stable/main/Contents-amd64.gz")
    pool = [line.split(b" ", 1)[1].decode() for line in packages.splitlines()
            if line.startswith(b"Filename: ")]
    for rel in pool[:: max(1, len(pool) // pool_files)][:pool_files]:
        server.get(f"big/{rel}")


MEMORY_UPLOADS = 10


def memory_uploads(runs):
    """How many one-deb uploads the server has taken when its RSS after uploads is read."""
    return max(caprepo_uploads(runs), MEMORY_UPLOADS)


def growth(work, n, runs):
    """caprepo alone at N debs: cold import, then add one against `caprepo serve` of the result,
    then what the server holds: its VmHWM before the uploads, after them, after apt-like fetches.

    The server's RSS climbs over its first several publishes (caches fill, freed buffers stay mapped),
    so it takes memory_uploads(runs) one-deb uploads in all, however few --runs time add one.
    Returns ((cold secs, cold RSS), (add-one secs, first upload secs), (RSS before uploads, after
    uploads, after fetches))."""
    debs = gen_packages(os.path.join(work, f"debs-{n}"), n, with_fixtures=True)
    extras = extra_packages(work, n, memory_uploads(runs))
    # A data dir per run, all removed once every size is measured (growth_tables): deleting one
    # right before the next run made the server's uploads slower on this VM's ext4, which has no
    # journal and skips every recently freed inode when it allocates one (perf: 10% of the
    # server's samples in recently_deleted). That is the benchmark's deletion, not caprepo's work.
    datas = [os.path.join(work, "growth", f"{n}-run{i}") for i in range(runs)]
    cold = median_sample([caprepo_cold(work, debs, data) for data in datas])
    data = datas[-1]
    print(f"growth {n} cold: {cold[0]:.3f}s", file=sys.stderr)
    server = CaprepoServer(work, data)
    try:
        started = server.peak_rss_kib()
        one = caprepo_add_one(server, extras[:caprepo_uploads(runs)])
        first = FIRST_UPLOADS[server.data]
        if extras[caprepo_uploads(runs):]:
            caprepo_add_one(server, extras[caprepo_uploads(runs):])
        uploaded = server.peak_rss_kib()
        fetch_like_apt(server)
        fetched = server.peak_rss_kib()
    finally:
        server.stop()
    print(f"growth {n} add one: {one:.3f}s (first after start {first:.3f}s)", file=sys.stderr)
    return cold, (one, first), (started, uploaded, fetched)


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return f"{cpu}, {os.cpu_count()} cores, {mem // 1024 // 1024} GiB, {platform.platform()}"


def fmt_row(tool, secs, rss_kib, caprepo_secs):
    ratio = "1" if tool == "caprepo" else f"{caprepo_secs / secs:.3g}"
    return f"| {tool} | {secs:.3f} | {ratio} | {rss_kib / 1024:.0f} |"


WORKLOADS = ["peers", "serving", "rpm", "upload", "concurrent", "growth"]


def peers_tables(args, peers, sizes, growth_rows):
    """Cold publish and add one at each of --sizes, caprepo against every peer."""
    lines = []
    for n in sizes:
        debs = gen_packages(os.path.join(args.work, f"debs-{n}"), n, with_fixtures=True)
        extras = extra_packages(args.work, n, caprepo_uploads(args.runs))

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

        one = add_one(args.work, extras, peers, args.runs)
        for tool, (s, _) in one.items():
            print(f"add one {n} {tool}: {s:.3f}s", file=sys.stderr)
        lines += [f"### Add one deb to the {n}-deb suite, until the signed index includes it", "",
                  "| tool | seconds | ratio | peak RSS MiB |", "|---|---|---|---|"]
        lines += [fmt_row(t, s, r, one["caprepo"][0]) for t, (s, r) in one.items()]
        lines.append("caprepo's RSS here is the server's (`caprepo serve`) peak over the uploads. "
                     + first_upload_note(os.path.join(args.work, "caprepo")))
        lines.append("")
        first = FIRST_UPLOADS[os.path.join(args.work, "caprepo")]
        growth_rows[n] = (cold["caprepo"], (one["caprepo"][0], first))
    return lines


def serving_table(args, sizes):
    rows, rss = serving(args.work)
    lines = [f"### Serving, {sizes[-1]}-deb suite, wrk -t2 -c32 -d5s on loopback", "",
             "| file | caprepo req/s | nginx req/s | caprepo/nginx |", "|---|---|---|---|"]
    lines += [f"| {label} | {c:.0f} | {n:.0f} | {c / n:.2f} |" for label, c, n in rows]
    lines += ["", f"caprepo serve peak RSS over the wrk runs: {rss / 1024:.0f} MiB.", ""]
    return lines


def fmt_peer_row(tool, secs, rss_kib, peer, peer_secs):
    """A row of a table against one peer: ratio = this row's time / the peer's, so a caprepo row's
    ratio reads as in the deb tables (caprepo time / peer time) however many caprepo rows there are."""
    ratio = "1" if tool == peer else f"{secs / peer_secs:.3g}"
    return f"| {tool} | {secs:.3f} | {ratio} | {rss_kib / 1024:.0f} |"


def peer_table(title, results, peer):
    """A markdown table of {tool: (seconds, RSS KiB)}, each row's ratio taken against PEER."""
    peer_s = results[peer][0]
    return [f"### {title}", "", "| tool | seconds | ratio | peak RSS MiB |", "|---|---|---|---|"] + \
        [fmt_peer_row(t, s, r, peer, peer_s) for t, (s, r) in results.items()]


def rpm_tables(args, peers, sizes):
    """RPM cold publish and add one at each of --sizes: caprepo, unsigned and signing packages,
    against createrepo_c."""
    version = createrepo_c_version()
    lines = []
    for n in sizes:
        rpms = gen_packages(os.path.join(args.work, f"rpms-{n}"), n, kind="rpm", with_fixtures=True)
        extras = extra_packages(args.work, n, caprepo_uploads(args.runs), kind="rpm")
        cold = rpm_cold(args, n, rpms, peers)
        lines += peer_table(f"RPM cold publish, {n} rpms, repomd.xml signed", cold, "createrepo_c")
        lines += ["", f"caprepo: `caprepo import` into an empty data dir (release 40, x86_64). createrepo_c "
                  f"{version}: `createrepo_c --no-database` (caprepo writes no sqlite either), then "
                  f"`gpg --detach-sign --armor` of repomd.xml with an Ed25519 key, since createrepo_c "
                  f"signs nothing; for the same reason the first caprepo row signs no packages "
                  f"(`repo add --no-sign-packages`). The signed row is `repo add`'s default: the agent "
                  f"signs every rpm's header too. Ratio = this row's time / createrepo_c's.", ""]

        one = rpm_add_one(args, n, extras, peers)
        peer_s = one["createrepo_c"][0]
        lines += peer_table(f"Add one rpm to the {n}-rpm release, until the signed repomd.xml includes it",
                            one, "createrepo_c")
        lines += ["", f"caprepo: `caprepo upload --wait` against `caprepo serve`, which returns once the new "
                  f"repomd.xml is served; its RSS is the server's peak over the uploads. createrepo_c: one "
                  f"rpm copied in (untimed), then `createrepo_c --update --no-database` over the directory "
                  f"the cold run indexed, and the gpg signature. caprepo is {peer_s / one['caprepo'][0]:.3g}x "
                  f"faster than createrepo_c (target at 20,000: 50x, ratio 0.02 or less). "
                  f"{first_upload_note(rpm_data(args.work, RPM))}", ""]
    return lines


def upload_table(args):
    mib, hashes, (up_s, server_rss) = upload_throughput(args.work, args.runs)
    sha_s = hashes["sha256sum"][0]
    print(f"upload {mib:.0f} MiB: sha256sum {sha_s:.3f}s, caprepo {up_s:.3f}s", file=sys.stderr)
    lines = [f"### Upload throughput, one {mib:.0f} MiB .deb over loopback HTTP", "",
             "| command | seconds | MiB/s | ratio | peak RSS MiB |", "|---|---|---|---|---|"]
    lines += [f"| `{tool} FILE` | {s:.3f} | {mib / s:.0f} | {sha_s / s:.2f} | {rss / 1024:.0f} |"
              for tool, (s, rss) in hashes.items()]
    lines += [f"| `caprepo upload --wait FILE` to `caprepo serve` | {up_s:.3f} | {mib / up_s:.0f} | "
              f"{sha_s / up_s:.2f} | {server_rss / 1024:.0f} |", "",
              "The file is random bytes packed with `dpkg-deb -Znone` (data.tar stored as is), read once "
              "before timing so every command starts from the page cache. Ratio = MiB/s / sha256sum's "
              "MiB/s (target for caprepo: at least 0.7); caprepo's RSS is the server's VmHWM (target: "
              "under 64 MiB). Each run uploads into a fresh data dir, so every run stores the whole file. "
              "openssl is there for scale: coreutils' sha256sum does not use the CPU's SHA extensions.", ""]
    return lines


def concurrent_table(args):
    secs, rss = concurrent_uploads(args.work, args.runs)
    print(f"concurrent: {CONCURRENT_DEBS} debs in {secs:.3f}s", file=sys.stderr)
    per = CONCURRENT_DEBS // CONCURRENT_UPLOADERS
    return [f"### {CONCURRENT_UPLOADERS} concurrent uploaders, {CONCURRENT_DEBS} small debs", "",
            "| command | seconds | packages/s | server peak RSS MiB |", "|---|---|---|---|",
            f"| {CONCURRENT_UPLOADERS} × `caprepo upload --wait` ({per} files each) | {secs:.3f} | "
            f"{CONCURRENT_DEBS / secs:.0f} | {rss / 1024:.0f} |", "",
            "Into an empty suite of a fresh data dir; timed from the first process's start to the last "
            "one's exit, after which the signed index lists all of them (checked).", ""]


def growth_tables(args, growth_rows):
    """Add one at every size measured, so its growth with N shows; then serve RSS at the growth sizes."""
    memory = []
    shutil.rmtree(os.path.join(args.work, "growth"), ignore_errors=True)
    for n in [int(s) for s in args.growth_sizes.split(",")]:
        cold, one, rss = growth(args.work, n, args.runs)
        growth_rows[n] = (cold, one)
        memory.append((n, rss))
    shutil.rmtree(os.path.join(args.work, "growth"), ignore_errors=True)
    ns = sorted(growth_rows)
    base_n, base_one = ns[0], growth_rows[ns[0]][1][0]
    lines = ["### caprepo alone: cold import and add one as N grows", "",
             "| N debs | cold import s | cold peak RSS MiB | add one s | add one / add one at "
             f"{base_n} | log N / log {base_n} | first upload after start s |", "|---|---|---|---|---|---|---|"]
    for n in ns:
        (cold_s, cold_rss), (one, first) = growth_rows[n]
        lines.append(f"| {n} | {cold_s:.3f} | {cold_rss / 1024:.0f} | {one:.3f} | {one / base_one:.2f} | "
                     f"{math.log(n) / math.log(base_n):.2f} | {first:.3f} |")
    lines += ["", "Cold import: `caprepo import` into an empty data dir. Add one: `caprepo upload --wait` "
              "against `caprepo serve` of that suite, the median of the (at least 19) uploads after the first. Target: "
              "add one grows no faster than log N, i.e. its column stays at or under the next one. The "
              "first upload after `serve` starts is timed apart: its publish lays the index files out "
              "from scratch and loads every fragment, once per server start.", "",
              "### Memory: `caprepo serve` holding an N-package suite", "",
              f"| N debs | before uploads MiB | after {memory_uploads(args.runs)} one-deb uploads MiB | "
              "after apt's fetches MiB |",
              "|---|---|---|---|"]
    lines += [f"| {n} | {a / 1024:.0f} | {b / 1024:.0f} | {c / 1024:.0f} |" for n, (a, b, c) in memory]
    lines += ["", "VmHWM (peak RSS) of the server, which only grows: read once it first answers, after "
              f"{memory_uploads(args.runs)} one-deb `caprepo upload --wait` runs (the add-one runs, and more if "
              "they are fewer than 10: its RSS "
              "climbs over the first publishes), then after fetching InRelease, Packages.xz, "
              "Contents-amd64.gz and 5 pool files. Target: under 300 MiB at 100,000.", ""]
    return lines


def command_line(args, only):
    cmd = f"python3 bench/run.py --runs {args.runs}"
    if "peers" in only or "serving" in only or "rpm" in only:
        cmd += f" --sizes {args.sizes}"
    if "growth" in only:
        cmd += f" --growth-sizes {args.growth_sizes}"
    if only != WORKLOADS:
        cmd += f" --only {','.join(only)}"
    return cmd


def main():
    global CAPREPO
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="5000,20000")
    p.add_argument("--growth-sizes", default="100000", help="caprepo-only sizes for the growth workload")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--only", default=",".join(WORKLOADS), help=f"comma-separated: {','.join(WORKLOADS)}")
    p.add_argument("--caprepo", default=CAPREPO, help="the caprepo binary to measure")
    p.add_argument("--work", default="/tmp/caprepo-bench")
    p.add_argument("--write", help="replace the generated section of this markdown file")
    args = p.parse_args()
    only = [w for w in WORKLOADS if w in args.only.split(",")]
    unknown = set(args.only.split(",")) - set(WORKLOADS)
    if unknown:
        sys.exit(f"unknown workload(s) {', '.join(sorted(unknown))}; choose from {', '.join(WORKLOADS)}")
    CAPREPO = os.path.abspath(args.caprepo)
    if not os.access(CAPREPO, os.X_OK):
        sys.exit(f"{CAPREPO} is missing: run `cargo build --release` first")
    os.makedirs(args.work, exist_ok=True)
    lines = [f"Machine: {machine()}. Command: `{command_line(args, only)}`. Medians of {args.runs} runs; "
             f"ratio = caprepo time / peer time (below 1 means caprepo is faster) unless a table says "
             f"otherwise; RSS is the peak of the run in MiB. Every N-package input holds N synthetic "
             f"packages plus the real ones from fixtures/ ({len(real_fixtures('deb'))} debs, "
             f"{len(real_fixtures('rpm'))} x86_64 and noarch rpms).", ""]
    sizes = [int(s) for s in args.sizes.split(",")]
    growth_rows = {}  # N -> ((cold secs, cold RSS KiB), add-one secs), for the growth table
    peers = Peers(args.work) if "peers" in only or "rpm" in only else None
    if "peers" in only:
        lines += peers_tables(args, peers, sizes, growth_rows)
    if "serving" in only:
        lines += serving_table(args, sizes)
    if "rpm" in only:
        lines += rpm_tables(args, peers, sizes)
    if "upload" in only:
        lines += upload_table(args)
    if "concurrent" in only:
        lines += concurrent_table(args)
    if "growth" in only:
        lines += growth_tables(args, growth_rows)

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
