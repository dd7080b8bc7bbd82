"""Benchmark the book's batch norm backwards against PyTorch's CPU kernel and against the memory bound.

Run `make bench` (or `python benchmarks/bench.py [--quick]`). Needs `requirements-bench.txt`.

Method: for every shape and dtype, each implementation is first verified against PyTorch
(float64: to 1e-10 relative to the largest entry; float32: to 1e-3), then warmed up, then timed in
rounds; each round runs every implementation once, in a fresh random order, so that a burst of load
from another process hits them all alike. The output gives the median and the quartiles of the
rounds, and ratios within the run: against PyTorch's native backward on 1 thread, against
`np.add(a, b, out=c)` on arrays of the same size, and against the 5/3 two-pass limit.
"""

from __future__ import annotations

import os

# numpy's BLAS on one thread, set before numpy loads it (threadpoolctl below enforces it again).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# numba compiles afresh for this run (and its generic child): kernels loaded from numba's on-disk cache
# carry no machine code to inspect, and the run records which SIMD registers the kernels use.
if "NUMBA_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-numba-")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

from bnbackprop.batchnorm import backward, backward_staged, forward  # noqa: E402
from bnbackprop import fast  # noqa: E402
from bnbackprop.fast import backward_blocked, backward_fast, forward_fast  # noqa: E402

SHAPES = [(64, 256), (256, 1024), (4096, 1024), (16384, 2048), (32, 64, 56, 56), (8, 256, 28, 28)]
QUICK_SHAPES = [(64, 256), (256, 1024), (4096, 1024), (8, 256, 28, 28)]
DTYPES = ["float64", "float32"]
EPS = 1e-5
TWO_PASS = 5 / 3  # a backward reads dy, xhat twice and writes dx: 5 transfers against np.add's 3
TOL = {"float64": 1e-10, "float32": 1e-3}
ROOT = Path(__file__).resolve().parent
# The full run goes where the speed chapter reads it, beside the chapter; a quick run stays here.
RESULTS = ROOT.parent / "book" / "data" / "bench-results.json"
REFS = ("np.add", "torch_native_1t")  # timed next to every other implementation


def make_case(shape, dtype, seed=0):
    """Random x with an offset, dy, gamma, beta (fixed seed), our forward cache, and torch views."""
    import torch

    rng = np.random.default_rng(seed)
    C = shape[1]
    x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma, beta = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    y, cache = forward(x, gamma, beta, eps=EPS)
    t = {k: torch.from_numpy(v) for k, v in dict(x=x, dy=dy, gamma=gamma, beta=beta).items()}
    _, t["mean"], t["invstd"] = torch.ops.aten.native_batch_norm(t["x"], t["gamma"], t["beta"], None, None, True, 0.1, EPS)
    return dict(x=x, dy=dy, gamma=gamma, beta=beta, y=y, cache=cache, t=t)


def implementations(case):
    """name -> zero-argument callable returning (dx, dgamma, dbeta) or (y,) as numpy arrays."""
    import torch

    x, dy, gamma, beta, cache, t = (case[k] for k in ("x", "dy", "gamma", "beta", "cache", "t"))
    out = np.empty_like(x)
    a, b, c = dy.copy(), cache.xhat.copy(), np.ones_like(x)  # touched pages: empty ones read as zeros
    xg = t["x"].clone().requires_grad_(True)
    wg, bg = t["gamma"].clone().requires_grad_(True), t["beta"].clone().requires_grad_(True)
    with torch.enable_grad():
        yg = torch.nn.functional.batch_norm(xg, None, None, wg, bg, training=True, eps=EPS)

    def native():
        res = torch.ops.aten.native_batch_norm_backward(t["dy"], t["x"], t["gamma"], None, None, t["mean"],
                                                        t["invstd"], True, EPS, [True, True, True])
        return tuple(r.numpy() for r in res)

    def autograd():
        res = torch.autograd.grad(yg, (xg, wg, bg), t["dy"], retain_graph=True)
        return tuple(r.numpy() for r in res)

    def torch_forward():
        return (torch.ops.aten.native_batch_norm(t["x"], t["gamma"], t["beta"], None, None, True, 0.1, EPS)[0].numpy(),)

    def torch_step():  # a training step: the forward, then the backward from its own statistics
        y, mean, invstd = torch.ops.aten.native_batch_norm(t["x"], t["gamma"], t["beta"], None, None, True, 0.1, EPS)
        res = torch.ops.aten.native_batch_norm_backward(t["dy"], t["x"], t["gamma"], None, None, mean, invstd,
                                                        True, EPS, [True, True, True])
        return tuple(r.numpy() for r in res)

    def fast_step():
        return backward_fast(dy, forward_fast(x, gamma, beta, eps=EPS)[1], out)

    return {
        "np.add": lambda: (np.add(a, b, out=c),),
        "backward_staged": lambda: backward_staged(dy, cache),
        "backward": lambda: backward(dy, cache),
        "backward_blocked": lambda: backward_blocked(dy, cache, out),
        "backward_fast": lambda: backward_fast(dy, cache, out),
        "backward_fast_2t": lambda: backward_fast(dy, cache, out, threads=2),
        "forward": lambda: (forward(x, gamma, beta, eps=EPS)[0],),
        "forward_fast": lambda: (forward_fast(x, gamma, beta, eps=EPS)[0],),
        "step_fast": fast_step,
        "torch_step_1t": torch_step,
        "torch_native_1t": native,
        "torch_native_2t": native,
        "torch_autograd_1t": autograd,
        "torch_autograd_2t": autograd,
        "torch_forward_1t": torch_forward,
    }


GENERIC_IMPLS = ("np.add", "torch_native_1t", "backward_fast", "forward_fast", "torch_forward_1t")
# Pairs compared round by round (each round times every implementation once): ours, PyTorch's.
VERSUS = {"forward_fast": "torch_forward_1t", "step_fast": "torch_step_1t", "backward_fast_2t": "torch_native_2t"}


def set_threads(name):
    """PyTorch's intra-op threads for this implementation: 2 for torch names ending in _2t, else 1."""
    import torch

    torch.set_num_threads(2 if name.startswith("torch") and name.endswith("_2t") else 1)


def verify(impls, dtype):
    """Every backward against torch's native one, every forward against torch's: error per implementation."""
    set_threads("1t")
    want_b, want_f = impls["torch_native_1t"](), impls["torch_forward_1t"]()
    errors = {}
    for name, fn in impls.items():
        if name == "np.add":
            continue
        want = want_f if "forward" in name else want_b
        set_threads(name)
        got = fn()
        err = max(float(np.max(np.abs(np.asarray(g, np.float64) - w)) / float(np.max(np.abs(w))))
                  for g, w in zip(got, want))
        if not err <= TOL[dtype]:
            raise AssertionError(f"{name} disagrees with PyTorch by {err:.2e} (> {TOL[dtype]:.0e}) in {dtype}")
        errors[name] = err
    return errors


def calibrate(fn, target=0.02):
    """Calls per timing so that one timing lasts about `target` seconds (small shapes run many calls)."""
    fn()
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    return int(min(1000, max(1, target // max(once, 1e-7))))


def time_rounds(impls, rounds, rng, progress):
    """Interleaved, paired timing. Every round runs each implementation once (n calls), in a shuffled
    order, each right after a timing of np.add and one of torch native on 1 thread: every time has
    its bound and its anchor measured under the same load, a fraction of a second apart."""
    calls = {}
    for name, fn in impls.items():
        set_threads(name)
        calls[name] = calibrate(fn)
    samples = {name: [] for name in impls}
    paired = {ref: {name: [] for name in impls} for ref in REFS}
    names = [n for n in impls if n not in REFS]

    def timed(name):
        fn, n = impls[name], calls[name]
        set_threads(name)
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n

    for _ in range(rounds):
        for i in rng.permutation(len(names)):
            for ref in REFS:
                t_ref = timed(ref)
                samples[ref].append(t_ref)
                paired[ref][names[i]].append(t_ref)
            samples[names[i]].append(timed(names[i]))
        progress.update(1)
    for ref in REFS:  # the references were timed back to back: each is the other's pair
        for other in REFS:
            paired[ref][other] = samples[ref]
    return samples, paired, calls


def summarize(samples):
    """Median and spread (quartiles, min, max) of the per-round times, in seconds."""
    s = np.asarray(samples)
    q1, med, q3 = np.percentile(s, [25, 50, 75])
    return dict(median=float(med), q1=float(q1), q3=float(q3), min=float(s.min()), max=float(s.max()), rounds=len(s))


def cache_bytes():
    """The last-level cache size in bytes, read from Linux's sysfs (0 if unknown)."""
    best = (0, 0)
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            size = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
        best = max(best, (level, int(size.rstrip("KM")) * scale))
    return best[1]


def vector_registers(kernels) -> dict:
    """Widest SIMD registers in numba's machine code for each compiled kernel signature (zmm: 512, ymm: 256, xmm: 128 bits)."""
    import re

    found = {}
    for kernel in kernels:
        for sig, asm in kernel.inspect_asm().items():
            regs = {r: len(re.findall(rf"%{r}\d", asm)) for r in ("zmm", "ymm", "xmm")}
            widest = next((r for r in ("zmm", "ymm", "xmm") if regs[r]), "none")
            found[f"{kernel.__name__}({sig[0]})"] = dict(widest=widest, **regs)
    return found


def simd_info() -> dict:
    """What numpy was built for and dispatches to, what numba compiles for, and what PyTorch dispatches to."""
    import numba
    import torch
    from llvmlite import binding as llvm
    from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__, __cpu_features__

    return {
        "numpy_baseline": list(__cpu_baseline__),
        "numpy_dispatched": [f for f in __cpu_dispatch__ if __cpu_features__.get(f)],
        "numba_cpu_name": numba.config.CPU_NAME or llvm.get_host_cpu_name(),
        "numba_cpu_name_env": os.environ.get("NUMBA_CPU_NAME"),
        "numba_vector_registers": vector_registers([fast._backward_jit, fast._normalize_cols,
                                                    fast._normalize_rows]),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def git_state() -> dict:
    """The commit the run timed and whether tracked files differed from it (None outside a git checkout)."""
    import subprocess

    def git(*args):
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status)}


def machine_info():
    """Which machine and versions produced the numbers."""
    import numba
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    blas = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "prefix")}
            for d in threadpool_info()]
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
        "last_level_cache_bytes": cache_bytes(),
        "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
        "torch": torch.__version__, "threadpools": blas,
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
        "load_average": list(os.getloadavg()),
        **git_state(),
        "numba_threading_layer": None,  # filled in after the run, when a parallel kernel has run
    }


def ratios(samples, paired):
    """Ratios within one run, each the median over rounds of a paired ratio: against torch native on
    1 thread and against np.add, both timed just before, and against the 5/3 two-pass limit."""
    out = {}
    for name, s in samples.items():
        s = np.asarray(s)
        vs = {ref: float(np.median(s / np.asarray(paired[ref][name]))) for ref in REFS}
        out[name] = dict(vs_torch_native_1t=vs["torch_native_1t"], vs_np_add=vs["np.add"],
                         vs_two_pass_limit=vs["np.add"] / TWO_PASS)
    for ours, theirs in VERSUS.items():  # same round, a fraction of a second apart
        if ours in samples and theirs in samples:
            out[ours]["vs_" + theirs] = float(np.median(np.asarray(samples[ours]) / np.asarray(samples[theirs])))
    return out


def rounds_for(nbytes, rounds):
    """Fewer rounds for arrays of 128 MiB and more, where one round takes seconds: keeps a run to minutes."""
    return max(3, rounds - 2) if nbytes >= 1 << 27 else rounds


def run(shapes, dtypes, rounds, seed, only=None):
    """Benchmark every shape and dtype (only the implementations named in `only`, if given); returns the records."""
    import torch
    from tqdm import tqdm

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    llc = cache_bytes()
    records = []
    total = sum(rounds_for(int(np.prod(s)) * np.dtype(d).itemsize, rounds) for s in shapes for d in dtypes)
    with tqdm(total=total, desc="rounds", unit="round", file=sys.stderr) as bar:
        for shape in shapes:
            for dtype in dtypes:
                bar.set_postfix_str(f"{dtype} {shape}")
                case = make_case(shape, dtype)
                impls = implementations(case)
                if only:
                    impls = {k: v for k, v in impls.items() if k in only}
                errors = verify(impls, dtype)
                nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                samples, paired, calls = time_rounds(impls, rounds_for(nbytes, rounds), rng, bar)
                times = {name: summarize(s) for name, s in samples.items()}
                rec = dict(shape=list(shape), dtype=dtype, array_bytes=nbytes, times=times, calls=calls, samples=samples,
                           verify_error_vs_torch=errors, ratios=ratios(samples, paired),
                           out_of_cache=bool(llc and nbytes >= llc))
                records.append(rec)
                del case, impls
    return records


def table(records) -> str:
    """A plain-text table of the ratios, one line per shape and dtype."""
    cols = ["backward_staged", "backward", "backward_blocked", "backward_fast", "torch_native_2t", "torch_autograd_1t", "forward"]
    vs = [("forward_fast", "torch_forward_1t", "fwd/torch"), ("step_fast", "torch_step_1t", "step/torch"),
          ("backward_fast_2t", "torch_native_2t", "2t/torch2t")]
    head = f"{'dtype':8} {'shape':18} {'ooc':3} {'torch1t ms':>10} {'add ms':>8} | " + " ".join(f"{c[:13]:>13}" for c in cols)
    lines = ["time / torch native 1 thread (and for backward_fast: / np.add, / 5/3 limit)", head]
    for r in records:
        t = r["times"]
        fast = r["ratios"]["backward_fast"]
        lines.append(
            f"{r['dtype']:8} {str(tuple(r['shape'])):18} {'yes' if r['out_of_cache'] else 'no':3} "
            f"{t['torch_native_1t']['median'] * 1e3:10.3f} {t['np.add']['median'] * 1e3:8.3f} | "
            + " ".join(f"{r['ratios'][c]['vs_torch_native_1t']:13.2f}" for c in cols)
            + f"   fast/add {fast['vs_np_add']:.2f}  fast/limit {fast['vs_two_pass_limit']:.2f}  "
            + "  ".join(f"{label} {r['ratios'][a]['vs_' + b]:.2f}" for a, b, label in vs)
        )
    return "\n".join(lines)


def generic_table(records) -> str:
    """backward_fast and forward_fast compiled for a generic x86-64 CPU: ratios to PyTorch and np.add."""
    lines = ["NUMBA_CPU_NAME=generic: backward_fast / torch native 1t, / np.add; forward_fast / torch forward 1t"]
    for r in records:
        ra = r["ratios"]
        lines.append(f"{r['dtype']:8} {str(tuple(r['shape'])):18} {ra['backward_fast']['vs_torch_native_1t']:6.2f} "
                     f"{ra['backward_fast']['vs_np_add']:6.2f} {ra['forward_fast']['vs_torch_forward_1t']:6.2f}")  # paired round by round
    return "\n".join(lines)


def _key(r) -> str:
    return f"{r['dtype']} {tuple(r['shape'])}"


def targets(records) -> dict:
    """Issue 18's targets, each with the ratios that decide it (below 1: ours is faster)."""
    def below(name, versus, bound=1.0, where=lambda r: True):
        got = {_key(r): r["ratios"][name][versus] for r in records if where(r)}
        return dict(met=bool(got) and all(v < bound for v in got.values()), bound=bound, ratios=got)

    split = lambda r: int(np.prod(r["shape"])) * np.dtype(r["dtype"]).itemsize >= fast.PARALLEL_MIN_BYTES  # noqa: E731
    return {
        "backward_fast_faster_than_torch_native_1t": below("backward_fast", "vs_torch_native_1t"),
        "backward_fast_within_2.0x_np_add_out_of_cache": below("backward_fast", "vs_np_add", 2.0, lambda r: r["out_of_cache"]),
        "forward_fast_faster_than_torch_forward_1t": below("forward_fast", "vs_torch_forward_1t"),
        "step_fast_faster_than_torch_step_1t": below("step_fast", "vs_torch_step_1t"),
        "backward_fast_2t_faster_than_torch_native_2t_where_split": below("backward_fast_2t", "vs_torch_native_2t", 1.0, split),
    }


def generic_run(args, rounds) -> dict:
    """backward_fast and forward_fast again in a child process with NUMBA_CPU_NAME=generic (no AVX: SSE2 only)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "generic.json"
        cmd = [sys.executable, __file__, "--generic-part", "--out", str(part), "--rounds", str(rounds), "--seed", str(args.seed)]
        subprocess.run(cmd + (["--quick"] if args.quick else []), check=True, env={**os.environ, "NUMBA_CPU_NAME": "generic"})
        return json.loads(part.read_text())


def main(argv=None) -> int:
    """Parse the options, run, print the table and the targets, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer shapes and rounds (about a minute); writes benchmarks/results/tmp/")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per shape and dtype (default 7, quick 3)")
    p.add_argument("--out", type=Path, default=None, help="JSON file to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--generic-part", action="store_true",
                   help="internal: the second part of a run, in a process whose numba compiles for a generic x86-64 CPU")
    args = p.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        p.error("--rounds must be at least 1")
    shapes = QUICK_SHAPES if args.quick else SHAPES
    rounds = args.rounds or (3 if args.quick else 7)
    out = args.out or (ROOT / "results" / "tmp" / "quick.json" if args.quick else RESULTS)
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(var):
            print(f"note: {var}={os.environ[var]} is set; it slows current numpy (see benchmarks/README.md)", file=sys.stderr)
    only = GENERIC_IMPLS if args.generic_part else None
    with threadpool_limits(1, user_api="blas"):
        info = machine_info()
        records = run(shapes, DTYPES, rounds, args.seed, only)
    import numba

    info["numba_threading_layer"] = numba.threading_layer() if not args.generic_part else None
    info["simd"] = simd_info()
    info["load_average_end"] = list(os.getloadavg())
    result = dict(machine=info, settings=dict(rounds=rounds, quick=args.quick, eps=EPS, tolerance=TOL,
                                              blas_threads=1, two_pass_limit=TWO_PASS,
                                              parallel_min_bytes=fast.PARALLEL_MIN_BYTES,
                                              stream_min_bytes=fast.STREAM_MIN_BYTES,
                                              forward_stream_min_bytes=fast.FORWARD_STREAM_MIN_BYTES,
                                              prefetch_min_bytes=fast.PREFETCH_MIN_BYTES),
                  records=records)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.generic_part:
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(generic_table(records))
        return 0
    result["targets"] = targets(records)
    result["generic"] = generic_run(args, rounds)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(records))
    print(generic_table(result["generic"]["records"]))
    for name, t in result["targets"].items():
        print(f"{'MET ' if t['met'] else 'MISS'} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in t["ratios"].items()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
