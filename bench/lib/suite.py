#!/usr/bin/env python3
"""suite.py: the benchmark suite behind bench/bench.sh (standard library only).

Runs every measurement of docs/BENCHMARKS.md in one go on this machine and writes the
raw figures to WORK/results.json; bench/lib/report.py turns them into the document.
Options: see bench/bench.sh --help. Not a test: nothing here runs under ctest.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEQ_LEN = 128
D_MODEL, N_LAYER, HOOK_LAYER, D_MLP = 768, 12, 8, 3072
ACTIVE = 64  # features per token the benchmark SAEs are made to fire

# Sizes per mode. model_seqs: sequences of 128 through the model (the peer runs the same);
# sae_tokens: the SAE-only store the queries run on (>= 10M nonzeros in the full suite).
MODES = {
    "quick": dict(model_seqs=32, topk_seqs=32, profile_seqs=16, sae_tokens=65536, sae_topk_tokens=32768,
                  scale_tokens=[8192, 32768, 65536], scale_dsae=[4096, 24576, 65536],
                  scale_dsae_tokens=8192, query_seconds=1.5),
    "full": dict(model_seqs=512, topk_seqs=256, profile_seqs=64, sae_tokens=262144, sae_topk_tokens=131072,
                 scale_tokens=[16384, 65536, 262144, 1048576], scale_dsae=[4096, 16384, 24576, 65536],
                 scale_dsae_tokens=65536, query_seconds=3.0),
}


def log(msg):
    print("[bench] " + msg, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    """Runs cmd (a list), returns stdout; a failure is fatal with the command's stderr."""
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-4000:] + p.stderr[-4000:])
        raise SystemExit("bench: command failed (%d): %s" % (p.returncode, " ".join(cmd)[:300]))
    return p.stdout


def has_modules(python, modules):
    if not python:
        return False
    try:
        p = subprocess.run([python, "-c", "import " + ", ".join(modules)], capture_output=True, timeout=120)
        return p.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine():
    info = {"cpu": "?", "cores": os.cpu_count(), "ram_gib": None, "flags": ""}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and info["cpu"] == "?":
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not info["flags"]:
                info["flags"] = line.split(":", 1)[1]
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                info["ram_gib"] = round(int(line.split()[1]) / 1048576, 1)
    except OSError:
        pass
    info["avx512"] = " avx512f " in " " + info["flags"] + " "
    del info["flags"]
    info["kernel"] = os.uname().release
    try:
        info["openblas"] = sh(["sh", "-c", "ls /usr/lib/*/libopenblas*.so.* 2>/dev/null | head -1"]).strip()
    except SystemExit:
        info["openblas"] = ""
    return info


def git_info():
    def g(*a):
        p = subprocess.run(["git", "-C", ROOT, *a], capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else ""
    dirty = g("status", "--porcelain", "--untracked-files=no")
    return {"commit": g("rev-parse", "--short=12", "HEAD"), "subject": g("log", "-1", "--format=%s"),
            "dirty": bool(dirty)}


def model_flops_per_token(d_sae, layers=HOOK_LAYER, d=D_MODEL, T=SEQ_LEN, d_mlp=D_MLP):
    """GEMM FLOPs per token up to blocks.<layers>.hook_resid_pre plus the SAE encoder.
    Per block: QKV 2*d*3d, attention scores and values 2*T*d each (the full T x T
    products a GEMM computes), output projection 2*d*d, MLP 2*d*d_mlp twice."""
    block = 2 * d * 3 * d + 4 * T * d + 2 * d * d + 2 * 2 * d * d_mlp
    return {"model": layers * block, "sae": 2 * d * d_sae, "total": layers * block + 2 * d * d_sae}


def delphi_bytes(nnz, n_seq, T, d_sae, splits=5, split_nnz=None):
    """delphi's cache for these activations: per latent range a safetensors file holding
    locations [n, 3] (uint16 when every index fits, else uint32), activations [n] fp16 and
    the whole token matrix [n_seq, T] (int32). split_nnz: nonzeros per file when known;
    otherwise spread evenly (the total is the same: headers differ by a few bytes)."""
    bounds = [d_sae * s // splits for s in range(splits + 1)]
    if split_nnz is None:
        split_nnz = [nnz // splits + (1 if s < nnz % splits else 0) for s in range(splits)]
    total = 0
    for s in range(splits):
        n = split_nnz[s]
        wide = max(n_seq, T, bounds[s + 1] - bounds[s]) > 65535
        loc = n * 3 * (4 if wide else 2)
        tensors = [("activations", "F16", [n], n * 2), ("locations", "U32" if wide else "U16", [n, 3], loc),
                   ("tokens", "I32", [n_seq, T], n_seq * T * 4)]
        off, hdr = 0, {}
        for name, dt, shape, size in tensors:
            hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + size]}
            off += size
        h = len(json.dumps(hdr, separators=(",", ":")))
        total += 8 + h + (-h % 8) + off
    return total


class Suite:
    def __init__(self, a):
        self.a = a
        self.p = MODES["quick" if a.quick else "full"]
        self.work = a.work
        self.build = a.build_dir
        self.ext = os.path.join(self.build, "saelite")
        self.sqlite3 = a.sqlite3
        self.res = {"mode": "quick" if a.quick else "full", "notes": [], "runs": {}, "skipped": {}}
        self.peer_python = a.peer_python
        self.gen_python = None
        self.strace = shutil.which("strace")
        self.timev = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None

    # ---- helpers ----
    def save(self):
        with open(os.path.join(self.work, "results.json"), "w") as f:
            json.dump(self.res, f, indent=1)

    def skip(self, what, why):
        log("SKIPPED %s: %s" % (what, why))
        self.res["skipped"][what] = why
        self.save()

    def extract(self, name, opts, db):
        """Runs extract_features(opts) in a fresh sqlite3 shell on db; times the whole command
        (wall), the finalize phase (from the progress redraw that says "finalizing" to the
        exit, timestamped by strace on the shell's main thread) and peak RSS (GNU time)."""
        opts = dict(opts, progress="on")
        extra_env = opts.pop("_env", None)
        env = dict(os.environ, **extra_env) if extra_env else None
        sql = "SELECT extract_features('%s');" % json.dumps(opts).replace("'", "''")
        tag = os.path.join(self.work, "run-" + name)
        cmd = [self.sqlite3, db, ".load " + self.ext, sql]
        if self.strace:
            cmd = [self.strace, "-ttt", "-s", "400", "-e", "trace=write", "-o", tag + ".strace", *cmd]
        if self.timev:
            cmd = [self.timev, "-v", "-o", tag + ".time", *cmd]
        log("extract %s: %s" % (name, json.dumps({k: v for k, v in opts.items() if k != "progress"})))
        t0 = time.time()
        with open(tag + ".stderr", "w") as err:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        t1 = time.time()
        if p.returncode != 0:
            sys.stderr.write(open(tag + ".stderr").read()[-3000:])
            raise SystemExit("bench: extraction %s failed" % name)
        eid = int(p.stdout.strip().splitlines()[-1])
        row = json.loads(sh([self.sqlite3, "-json", db, "SELECT * FROM extractions WHERE id = %d" % eid]))[0]
        if row["status"] != "done":
            raise SystemExit("bench: extraction %s: status %s: %s" % (name, row["status"], row["error"]))
        r = {"id": eid, "db": db, "wall_s": t1 - t0, "tokens": row["tokens_done"], "nnz": row["nnz"],
             "store_bytes": row["store_bytes"], "d_sae": row["d_sae"], "d_in": row["d_in"], "store": row["store"],
             "sequences": row["sequences_done"], "device": row["device"], "options": opts}
        r["tokens_per_s"] = r["tokens"] / r["wall_s"]
        r["files"] = {}
        for fn in sorted(os.listdir(row["store"])):
            kind = "segments" if fn.startswith("seg-") else fn
            r["files"][kind] = r["files"].get(kind, 0) + os.path.getsize(os.path.join(row["store"], fn))
        r["store_dir_bytes"] = sum(r["files"].values())
        r["n_segments"] = len([f for f in os.listdir(row["store"]) if f.startswith("seg-")])
        if self.timev and os.path.exists(tag + ".time"):
            tv = open(tag + ".time").read()
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", tv)
            r["peak_rss_mib"] = int(m.group(1)) / 1024 if m else None
            u = re.search(r"User time \(seconds\): ([\d.]+)", tv)
            s = re.search(r"System time \(seconds\): ([\d.]+)", tv)
            if u and s:
                r["cpu_s"] = float(u.group(1)) + float(s.group(1))
        if self.strace and os.path.exists(tag + ".strace"):
            first_fin = first_draw = end = None
            for line in open(tag + ".strace", errors="replace"):
                m = re.match(r"(\d+\.\d+) (.*)", line)
                if not m:
                    continue
                t, rest = float(m.group(1)), m.group(2)
                if rest.startswith("write(2,"):
                    if first_draw is None:
                        first_draw = t
                    if "finalizing" in rest and first_fin is None:
                        first_fin = t
                if rest.startswith("+++ exited"):
                    end = t
            if first_fin is not None and end is not None:
                r["finalize_s"] = end - first_fin
        return r

    def sgemm(self, m, k, n, seconds, env=None):
        """sgemm GFLOP/s (wall), and per CPU-second of the process (GNU time): the second is
        what the shape gets from each busy core whatever else runs on the machine."""
        cmd = [os.path.join(self.build, "sgemm_flops"), "--m", str(m), "--k", str(k), "--n", str(n),
               "--seconds", str(seconds)]
        tf = os.path.join(self.work, "sgemm.time")
        if self.timev:
            cmd = [self.timev, "-f", "%e %U %S", "-o", tf, *cmd]
        out = sh(cmd, env=env)
        vals = dict(line.split(None, 1) for line in out.strip().splitlines() if " " in line)
        r = {"m": m, "k": k, "n": n, "gflops": float(vals["sgemm_gflops"]), "threads": vals.get("sgemm_threads"),
             "config": vals.get("sgemm_config", "").strip()}
        if self.timev:
            wall, user, sys_ = (float(x) for x in open(tf).read().split()[-3:])
            r["gflops_per_cpu_s"] = r["gflops"] * wall / max(user + sys_, 1e-9)
        return r

    # ---- steps ----
    def step_build(self):
        if not self.a.no_build:
            log("building in %s" % self.build)
            if not os.path.exists(os.path.join(self.build, "CMakeCache.txt")):
                sh(["cmake", "-S", ROOT, "-B", self.build, "-DCMAKE_BUILD_TYPE=RelWithDebInfo"])
            sh(["cmake", "--build", self.build, "-j%d" % (os.cpu_count() or 2)])
        for f in ("saelite.so", "gen_bench_input", "sgemm_flops"):
            if not os.path.exists(os.path.join(self.build, f)):
                raise SystemExit("bench: %s/%s is missing (build first)" % (self.build, f))
        cc = os.environ.get("CC", "cc")
        flags = sh(["pkg-config", "--cflags", "--libs", "sqlite3"]).split()
        self.qt = os.path.join(self.work, "query_timer")
        sh([cc, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wshadow", "-Wstrict-prototypes",
            "-D_POSIX_C_SOURCE=200809L", os.path.join(ROOT, "bench", "query_timer.c"), *flags, "-o", self.qt])
        self.res["build"] = {"dir": self.build, "type": re.search(r"CMAKE_BUILD_TYPE:\w+=(\w*)", open(
            os.path.join(self.build, "CMakeCache.txt")).read()).group(1)}

    def step_pythons(self):
        cands = [p for p in (self.peer_python, shutil.which("python3")) if p]
        self.gen_python = next((p for p in cands if has_modules(p, ["numpy"])), None)
        peer_mods = ["numpy", "torch", "transformers", "sae_lens", "safetensors", "tokenizers"]
        self.peer_ok = has_modules(self.peer_python, peer_mods)
        self.peer_python_status = "ok"
        if not self.peer_ok:
            self.peer_python_status = ("PEER_PYTHON not set (or --peer-python)" if not self.peer_python else
                                       "%s lacks one of %s" % (self.peer_python, ", ".join(peer_mods)))
        self.plot_python = next((p for p in cands if has_modules(p, ["matplotlib"])), None)

    def step_inputs(self):
        self.dataset = os.path.join(self.work, "dataset.jsonl")
        sh([sys.executable, os.path.join(ROOT, "tools", "demo", "make_demo_dataset.py"), self.dataset])
        self.res["dataset"] = {"path": "tools/demo/make_demo_dataset.py (this repository's text)",
                               "bytes": os.path.getsize(self.dataset)}
        if not self.gen_python:
            self.skip("model", "no Python with numpy for tools/bench/make_bench_model.py (set PEER_PYTHON)")
            return
        self.inp = os.path.join(self.work, "input")
        cmd = [self.gen_python, os.path.join(ROOT, "tools", "bench", "make_bench_model.py"), self.inp,
               "--tokenizer", os.path.join(ROOT, "examples", "tiny", "tokenizer.json"),
               "--calib-text", self.dataset, "--active", str(ACTIVE), "--snippet", os.path.join(self.work, "snippet.txt"),
               "--sae", "standard:24576", "--sae", "topk:24576"]
        log("generating the model and SAEs (%s)" % self.gen_python)
        out = sh(cmd)
        self.res["model_gen"] = out.strip().splitlines()

    def step_sgemm(self):
        s = 2 if self.a.quick else 3
        shapes = {"sae_encoder": (682, D_MODEL, 24576), "mlp_fc": (4096, D_MODEL, D_MLP),
                  "qkv": (4096, D_MODEL, 3 * D_MODEL)}
        self.res["sgemm"] = {k: self.sgemm(*v, seconds=s) for k, v in shapes.items()}
        self.res["sgemm_peak_gflops"] = max(v["gflops"] for v in self.res["sgemm"].values())
        # The per-head attention products (T x T x d_head, thousands of calls a batch): with
        # the default threads and with one (the engine's call sites may want either).
        self.res["sgemm_attention"] = {
            "default_threads": self.sgemm(SEQ_LEN, 64, SEQ_LEN, seconds=s),
            "one_thread": self.sgemm(SEQ_LEN, 64, SEQ_LEN, seconds=s, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))}
        if self.res["machine"].get("avx512"):
            env = dict(os.environ, OPENBLAS_CORETYPE="SkylakeX")
            self.res["sgemm_skylakex"] = self.sgemm(682, D_MODEL, 24576, seconds=s, env=env)
        log("sgemm: " + ", ".join("%s %.1f GFLOP/s" % (k, v["gflops"]) for k, v in self.res["sgemm"].items()))
        self.save()

    def model_opts(self, arch, seqs):
        return {"sae": os.path.join(self.inp, "sae-%s-24576" % arch), "model": os.path.join(self.inp, "model"),
                "tokenizer": os.path.join(self.inp, "model", "tokenizer.json"), "dataset": self.dataset,
                "max_tokens": seqs * SEQ_LEN}

    def step_model(self):
        if "model" in self.res["skipped"]:
            return
        self.model_db = os.path.join(self.work, "model.db")
        for arch, seqs in (("standard", self.p["model_seqs"]), ("topk", self.p["topk_seqs"])):
            r = self.extract("model-" + arch, self.model_opts(arch, seqs), self.model_db)
            f = model_flops_per_token(r["d_sae"])
            r["flops_per_token"] = f
            r["gemm_bound_tokens_per_s"] = self.res["sgemm_peak_gflops"] * 1e9 / f["total"]
            r["ratio_to_gemm_bound"] = r["tokens_per_s"] / r["gemm_bound_tokens_per_s"]
            self.cpu_ratio(r, max(v.get("gflops_per_cpu_s", 0) for v in self.res["sgemm"].values()))
            self.res["runs"]["model-" + arch] = r
            log("model %s: %.0f tokens/s, %.3f of the GEMM-bound limit" % (arch, r["tokens_per_s"],
                                                                          r["ratio_to_gemm_bound"]))
            self.save()

    def step_peer(self):
        if not self.peer_ok:
            self.skip("peer", "the peer pipeline needs torch, transformers, sae-lens: " + self.peer_python_status)
            return
        if "model" in self.res["skipped"]:
            self.skip("peer", "no model input (see 'model')")
            return
        run = self.res["runs"]["model-standard"]
        out = os.path.join(self.work, "peer")
        log("peer pipeline (torch + transformers + sae-lens) on the same %d sequences" % run["sequences"])
        t0 = time.time()
        cmd = [self.peer_python, os.path.join(ROOT, "bench", "peer", "peer_pipeline.py"),
               "--model", os.path.join(self.inp, "model"), "--sae", os.path.join(self.inp, "sae-standard-24576"),
               "--dataset", self.dataset, "--sequences", str(run["sequences"]), "--out", out,
               "--threads", str(os.cpu_count() or 1)]
        if self.timev:
            cmd = [self.timev, "-v", "-o", os.path.join(self.work, "peer.time"), *cmd]
        sh(cmd)
        wall = time.time() - t0
        pj = json.load(open(os.path.join(out, "peer.json")))
        pj["wall_s"] = wall
        if self.timev:
            tv = open(os.path.join(self.work, "peer.time")).read()
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", tv)
            pj["peak_rss_mib"] = int(m.group(1)) / 1024 if m else None
            u = re.search(r"User time \(seconds\): ([\d.]+)", tv)
            st = re.search(r"System time \(seconds\): ([\d.]+)", tv)
            if u and st:
                pj["cpu_s"] = float(u.group(1)) + float(st.group(1))
        pj["delphi_formula_bytes"] = delphi_bytes(pj["nnz"], pj["sequences"], SEQ_LEN, pj["d_sae"])
        log("comparing saelite's results (SQL) with the peer's")
        p = subprocess.run([self.peer_python, os.path.join(ROOT, "bench", "peer", "compare.py"), "--db", self.model_db,
                            "--ext", self.ext, "--extraction-id", str(run["id"]), "--peer", out,
                            "--sqlite3", self.sqlite3], capture_output=True, text=True)
        if p.returncode not in (0, 1) or not p.stdout.strip():
            sys.stderr.write(p.stderr[-3000:])
            raise SystemExit("bench: compare.py failed")
        pj["compare"] = json.loads(p.stdout.strip().splitlines()[-1])
        pj["ratio_end_to_end"] = wall / run["wall_s"]
        self.res["peer"] = pj
        log("peer: %.1f s vs saelite %.1f s: saelite %.2fx faster; same results: %s" % (
            wall, run["wall_s"], pj["ratio_end_to_end"], pj["compare"]["ok"]))
        self.save()

    @staticmethod
    def cpu_ratio(r, gflops_per_cpu_s):
        """The same ratio in CPU time: tokens per CPU-second of the run against sgemm FLOP per
        CPU-second; much less sensitive to other work on the machine than the wall ratio."""
        if r.get("cpu_s") and gflops_per_cpu_s:
            r["ratio_cpu_time"] = (r["tokens"] / r["cpu_s"]) / (gflops_per_cpu_s * 1e9 / r["flops_per_token"]["total"])

    def gen_acts(self, tokens, d_sae, arch):
        d = os.path.join(self.work, "acts-%s-%d-%d" % (arch, d_sae, tokens))
        if not os.path.exists(os.path.join(d, "acts.safetensors")):
            sh([os.path.join(self.build, "gen_bench_input"), d, "--tokens", str(tokens), "--seq-len", str(SEQ_LEN),
                "--d-in", str(D_MODEL), "--d-sae", str(d_sae), "--active", str(ACTIVE), "--dtype", "f16",
                "--arch", arch, "--seed", "1234", "--density", "lognormal" if arch == "standard" else "uniform"])
            subprocess.run(["sync"])
        return d

    def sae_only(self, name, tokens, d_sae, arch, env=None, keep_input=True):
        d = self.gen_acts(tokens, d_sae, arch)
        opts = {"sae": os.path.join(d, "sae"), "activations": os.path.join(d, "acts.safetensors")}
        if env:
            opts["_env"] = env
        r = self.extract(name, opts, os.path.join(self.work, "sae.db"))
        r["flops_per_token"] = {"sae": 2 * D_MODEL * d_sae, "total": 2 * D_MODEL * d_sae}
        # a run with other BLAS kernels is held to the sgemm rate of those kernels
        sg = self.res["sgemm_skylakex"] if env and env.get("OPENBLAS_CORETYPE") else self.res["sgemm"]["sae_encoder"]
        r["gemm_bound_tokens_per_s"] = sg["gflops"] * 1e9 / (2 * D_MODEL * d_sae)
        r["ratio_to_gemm_bound"] = r["tokens_per_s"] / r["gemm_bound_tokens_per_s"]
        self.cpu_ratio(r, sg.get("gflops_per_cpu_s", 0))
        r["delphi_bytes"] = delphi_bytes(r["nnz"], r["tokens"] // SEQ_LEN, SEQ_LEN, d_sae)
        r["dense_fp16_bytes"] = r["tokens"] * d_sae * 2
        if not keep_input:
            shutil.rmtree(d, ignore_errors=True)
        self.res["runs"][name] = r
        self.save()
        return r

    def step_sae_only(self):
        r = self.sae_only("sae-standard", self.p["sae_tokens"], 24576, "standard")
        log("SAE-only standard: %.0f tokens/s, %.3f of the GEMM-bound limit, %.2f bytes/nonzero" % (
            r["tokens_per_s"], r["ratio_to_gemm_bound"], r["store_bytes"] / r["nnz"]))
        r = self.sae_only("sae-topk", self.p["sae_topk_tokens"], 24576, "topk", keep_input=False)
        log("SAE-only topk: %.0f tokens/s, %.3f of the GEMM-bound limit" % (r["tokens_per_s"], r["ratio_to_gemm_bound"]))
        if self.res["machine"].get("avx512") and not self.a.quick:
            r = self.sae_only("sae-standard-skylakex", self.p["sae_tokens"], 24576, "standard",
                              env={"OPENBLAS_CORETYPE": "SkylakeX"})
            log("SAE-only standard, OPENBLAS_CORETYPE=SkylakeX: %.0f tokens/s" % r["tokens_per_s"])

    def step_queries(self):
        big = self.res["runs"]["sae-standard"]
        db, eid = big["db"], big["id"]
        # the feature with the most nonzeros (the slowest single-feature lookup) and a median one
        rows = json.loads(sh([self.sqlite3, "-json", db, ".load " + self.ext,
                              "SELECT feature_id, n_active FROM feature_stats WHERE extraction_id = %d "
                              "ORDER BY n_active DESC" % eid]))
        f_max, f_med = rows[0], rows[len(rows) // 2]
        secs = str(self.p["query_seconds"])
        q = [("features_sorted", "SELECT * FROM features WHERE extraction_id = %d ORDER BY frequency DESC" % eid),
             ("features_top50", "SELECT * FROM features WHERE extraction_id = %d ORDER BY frequency DESC LIMIT 50" % eid),
             ("top_examples_one", "SELECT * FROM top_examples WHERE extraction_id = %d AND feature_id = %d AND kind = 'top'"
              % (eid, f_med["feature_id"])),
             ("top_examples_all_kinds", "SELECT * FROM top_examples WHERE extraction_id = %d AND feature_id = %d"
              % (eid, f_med["feature_id"])),
             ("feature_stats_one", "SELECT * FROM feature_stats WHERE extraction_id = %d AND feature_id = %d"
              % (eid, f_med["feature_id"])),
             ("activations_median", "SELECT count(*), sum(activation) FROM activations WHERE extraction_id = %d "
              "AND feature_id = %d" % (eid, f_med["feature_id"])),
             ("activations_max", "SELECT count(*), sum(activation) FROM activations WHERE extraction_id = %d "
              "AND feature_id = %d" % (eid, f_max["feature_id"])),
             ("activations_rows_max", "SELECT sequence_id, position, activation FROM activations WHERE "
              "extraction_id = %d AND feature_id = %d" % (eid, f_max["feature_id"]))]
        out = sh([self.qt, db, self.ext, "--runs", "200", "--seconds", secs] + [x for pair in q for x in pair])
        res = self.parse_qt(out)
        res["_features"] = {"median": f_med, "max": f_max, "store_nnz": big["nnz"]}
        snippet = os.path.join(self.work, "snippet.txt")
        if "model" not in self.res["skipped"] and os.path.exists(snippet):
            text = open(snippet, encoding="utf-8").read()
            mid = self.res["runs"]["model-standard"]["id"]
            sql = "SELECT count(*) FROM encode_text('%s', %d)" % (text.replace("'", "''"), mid)
            out = sh([self.qt, self.model_db, self.ext, "--runs", "50", "--seconds", secs, "encode_text_100", sql])
            res.update(self.parse_qt(out))
            res["_snippet_tokens"] = 100
        self.res["queries"] = res
        for k, v in res.items():
            if not k.startswith("_"):
                log("query %-22s %s" % (k, "%.3f ms (median of %d)" % (v["median_ms"], v["runs"]) if v["ok"]
                                         else "not available: " + v["error"]))
        self.save()

    @staticmethod
    def parse_qt(out):
        res = {}
        for line in out.strip().splitlines():
            f = line.split("\t")
            if f[1] == "ok":
                res[f[0]] = {"ok": True, "median_ms": float(f[2]), "min_ms": float(f[3]), "max_ms": float(f[4]),
                             "cold_ms": float(f[5]), "runs": int(f[6]), "rows": int(f[7])}
            else:
                res[f[0]] = {"ok": False, "error": f[2] if len(f) > 2 else "?"}
        return res

    def step_scaling(self):
        sc = {"tokens": [], "d_sae": []}
        big = self.res["runs"]["sae-standard"]
        for n in self.p["scale_tokens"]:
            r = big if n == big["tokens"] else self.sae_only("scale-t%d" % n, n, 24576, "standard", keep_input=False)
            sc["tokens"].append({k: r[k] for k in ("tokens", "wall_s", "store_bytes", "store_dir_bytes", "nnz",
                                                   "tokens_per_s", "d_sae") if k in r} | {"finalize_s": r.get("finalize_s")})
        n = self.p["scale_dsae_tokens"]
        for s in self.p["scale_dsae"]:
            key = "scale-t%d" % n if s == 24576 else "scale-s%d" % s
            r = self.res["runs"].get(key) or (big if s == 24576 and n == big["tokens"] else None)
            if r is None:
                r = self.sae_only(key, n, s, "standard", keep_input=False)
            sc["d_sae"].append({k: r[k] for k in ("tokens", "wall_s", "store_bytes", "store_dir_bytes", "nnz",
                                                  "tokens_per_s", "d_sae") if k in r} | {"finalize_s": r.get("finalize_s")})
        self.res["scaling"] = sc
        self.save()

    def step_profile(self):
        perf = shutil.which("perf")
        if not perf:
            self.skip("profile", "perf is not installed (apt install linux-perf)")
            return
        if "model" in self.res["skipped"]:
            self.skip("profile", "no model input")
            return
        data = os.path.join(self.work, "perf.data")
        db = os.path.join(self.work, "profile.db")
        opts = dict(self.model_opts("standard", self.p["profile_seqs"]), progress="off")
        sql = "SELECT extract_features('%s');" % json.dumps(opts).replace("'", "''")
        log("profiling a model extraction of %d sequences with perf" % self.p["profile_seqs"])
        p = subprocess.run([perf, "record", "-F", "499", "-o", data, "--", self.sqlite3, db, ".load " + self.ext, sql],
                           capture_output=True, text=True)
        if p.returncode != 0:
            self.skip("profile", "perf record failed: " + p.stderr.strip()[-300:])
            return
        rep = sh([perf, "report", "-i", data, "--no-children", "--sort", "dso,sym", "--stdio", "--percent-limit", "0"])
        self.res["profile"] = profile_breakdown(rep, os.path.join(self.build, "saelite.so"))
        self.res["profile"]["sequences"] = self.p["profile_seqs"]
        self.save()


# ---- profile categories ----
CATEGORIES = [
    ("sgemm (OpenBLAS kernels and packing)", lambda dso, sym, src: "openblas" in dso and "yield" not in sym),
    ("BLAS threads waiting (sched_yield)", lambda dso, sym, src: "sched_yield" in sym or "do_sched_yield" in sym
     or sym in ("__schedule", "schedule", "finish_task_switch.isra.0")),
    ("model, non-GEMM (layer norm, attention softmax, GELU, residual adds)",
     lambda dso, sym, src: src in ("model.c", "model_math.h") or "libm" in dso),
    ("SAE encode (bias, activation, threshold/top-k, to CSR) and reconstruction stats",
     lambda dso, sym, src: src in ("sae.c", "sae_math.h", "csr.c", "backend_cpu.c")),
    ("store: fp16, varint, LZ4, XXH64, segment writes",
     lambda dso, sym, src: src in ("store.c", "dtype.c") or "lz4" in dso or "xxhash" in dso or "XXH" in sym),
    ("statistics and top-k heaps", lambda dso, sym, src: src == "stats.c"),
    ("finalize: results.slr, example windows, index.sli",
     lambda dso, sym, src: src in ("results.c", "findex.c", "rowstore.c", "checkpoint.c")),
    ("tokenize and read the dataset", lambda dso, sym, src: src in ("tokenizer.c", "text.c", "dataset.c", "tokfile.c",
                                                                     "source.c") or "pcre2" in dso or "jansson" in dso),
    ("libc (memcpy, memset, qsort)", lambda dso, sym, src: "libc" in dso),
    ("kernel (page faults, file I/O)", lambda dso, sym, src: "kernel" in dso),
]


def symbol_sources(so):
    """symbol -> source file name, from the extension's debug information (nm -l)."""
    out = {}
    try:
        text = subprocess.run(["nm", "-l", "--defined-only", so], capture_output=True, text=True).stdout
    except OSError:
        return out
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 4 and f[1].lower() == "t":
            out[f[2]] = os.path.basename(f[3].rsplit(":", 1)[0])
    return out


def profile_breakdown(report, so):
    srcs = symbol_sources(so)
    cats, top = {}, []
    for line in report.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(4).strip()
        src = srcs.get(sym, "") if dso.startswith("saelite") else ""
        name = next((c for c, f in CATEGORIES if f(dso, sym, src)), "other")
        cats[name] = cats.get(name, 0.0) + pct
        if len(top) < 15:
            top.append({"pct": pct, "dso": dso, "symbol": sym, "source": src})
    return {"categories": sorted(cats.items(), key=lambda kv: -kv[1]), "top_symbols": top}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--work", required=True)
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--peer-python", default=os.environ.get("PEER_PYTHON"))
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--sqlite3", default=os.environ.get("SQLITE3", "sqlite3"))
    a = ap.parse_args()
    if a.no_peer:
        a.peer_python_forced_off = True
    s = Suite(a)
    t0 = time.time()
    s.res["machine"] = machine()
    s.res["git"] = git_info()
    s.res["date_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    s.res["load_before"] = loadavg()
    s.step_build()
    s.step_pythons()
    if a.no_peer:
        s.peer_ok, s.peer_python_status = False, "--no-peer"
    s.step_inputs()
    s.step_sgemm()
    s.step_model()
    s.step_peer()
    s.step_sae_only()
    s.step_queries()
    s.step_scaling()
    s.step_profile()
    s.res["load_after"] = loadavg()
    s.res["suite_s"] = time.time() - t0
    s.res["plot_python"] = s.plot_python
    s.save()
    log("suite done in %.0f s" % s.res["suite_s"])


if __name__ == "__main__":
    main()
