"""``python -m jitloss info|check|bench|demo``."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np


def _info(args) -> int:
    import llvmlite
    import numba

    import jitloss
    import jitloss.cpu

    jitloss.softmax(np.ones((64, 1024), np.float32))  # one parallel run picks the layer
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not initialised"
    cache_dir = numba.config.CACHE_DIR or os.path.join(
        os.path.dirname(jitloss.cpu.__file__), "__pycache__"
    )
    rows = [
        ("jitloss", jitloss.__version__),
        ("python", platform.python_version()),
        ("numpy", np.__version__),
        ("numba", numba.__version__),
        ("llvmlite", llvmlite.__version__),
        ("cpu", f"{platform.machine()} {_cpu_name()} ({os.cpu_count()} logical cores)"),
        ("numba threads", f"{numba.get_num_threads()} (layer: {layer})"),
        ("SVML", "on" if numba.config.USING_SVML else "off (jitloss does not need it)"),
        ("numba cache", cache_dir),
        ("CUDA", _cuda_summary()),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def _cpu_name() -> str:
    try:
        import llvmlite.binding as llvm

        return llvm.get_host_cpu_name()
    except Exception:  # pragma: no cover - informational only
        return platform.processor() or "unknown"


def _cuda_summary() -> str:
    try:
        from numba import cuda
    except ImportError:
        return "numba.cuda not installed (pip install jitloss[cuda])"
    try:
        if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
            return "simulator (NUMBA_ENABLE_CUDASIM=1)"
        if not cuda.is_available():
            return "no CUDA device"
        dev = cuda.get_current_device()
        cc = ".".join(map(str, dev.compute_capability))
        name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
        return f"{name} (compute capability {cc})"
    except Exception as exc:  # pragma: no cover - depends on the machine
        return f"unavailable ({exc})"


def _to_device(d):
    from numba import cuda

    return {k: cuda.to_device(v) if isinstance(v, np.ndarray) else v for k, v in d.items()}


def _to_host(x):
    return x.copy_to_host() if hasattr(x, "copy_to_host") else x


def _check(args) -> int:
    from ._bench import OPS

    rng = np.random.default_rng(0)
    failures = 0
    cuda = args.device == "cuda"
    if cuda and not _cuda_ok():
        print("no CUDA device (and NUMBA_ENABLE_CUDASIM is not set)")
        return 1
    shapes = [((64, 100), -1), ((30, 50), 0)]
    if cuda and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        shapes = [((3, 5), -1), ((4, 3), 0)]  # the simulator runs a Python thread per thread
        _small_cuda_launches()
    print(f"# device: {args.device}")
    print(f"{'function':<32} {'dtype':<8} {'shape':<12} {'axis':>4}  {'max error':>10}  {'tol':>8}")
    for op in OPS.values():
        for dtype in ("float32", "float64"):
            for shape, axis in shapes:
                d = op.make(shape, dtype, rng, axis)
                d64 = {k: v.astype(np.float64)
                       if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
                       for k, v in d.items()}
                got, want = op.run(_to_device(d) if cuda else d), op.numpy(d64)
                if not isinstance(want, tuple):
                    got, want = (got,), (want,)
                got = tuple(_to_host(g) for g in got)
                err, ok = 0.0, True
                for g, w in zip(got, want):  # each result (loss, gradient) on its own scale
                    g = np.asarray(g, dtype=np.float64)
                    w = np.asarray(w, dtype=np.float64)
                    scale = max(float(np.max(np.abs(w))), 1e-300)
                    err = max(err, float(np.max(np.abs(g - w))) / scale)
                    ok = ok and g.shape == w.shape
                tol = op.rtol[dtype]
                ok = ok and err <= tol
                failures += not ok
                status = "ok" if ok else "MISMATCH"
                print(f"{op.name:<32} {dtype:<8} {'x'.join(map(str, shape)):<12} {axis:>4}  "
                      f"{err:>10.2e}  {tol:>8.0e}  {status}")
    print("all functions agree with the float64 reference" if not failures
          else f"{failures} mismatches")
    return 1 if failures else 0


def _small_cuda_launches() -> None:
    import jitloss.cuda as jc

    jc.WARP, jc.ROWS_PER_BLOCK, jc.THREADS, jc.WARP_MAX_CLASSES, jc.THREADS_1D = 4, 2, 8, 8, 8


def _cuda_ok() -> bool:
    try:
        from numba import cuda

        return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or bool(cuda.is_available())
    except Exception:
        return False


def _bench(args) -> int:
    from . import _bench as B

    if args.device == "cuda":
        return _bench_cuda(args)

    ops = [B.OPS[name] for name in args.op] if args.op else list(B.OPS.values())
    if args.shape:
        shapes = {s: B.parse_shape(s) for s in args.shape}
    else:
        shapes = dict(B.SHAPES)
    try:
        if args.no_torch:
            raise ImportError
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch = None
        torch_version = "not installed" if not args.no_torch else "not used"
    import numba

    print(f"# jitloss bench: {args.dtype}, numba threads {numba.get_num_threads()}, "
          f"torch {torch_version}" + (f" ({torch.get_num_threads()} threads)" if torch else ""))
    print(f"# {platform.machine()} {_cpu_name()}, {os.cpu_count()} logical cores; "
          f"{args.rounds} interleaved rounds; times are medians, ratios the median over the "
          f"rounds of time / np.copyto time in the same round")
    header = (f"| {'function':<32} | {'shape':<12} | {'axis':>4} | {'copy us':>9} | "
              f"{'jitloss us':>10} | {'jitloss':>7} | {'numpy':>7} | {'torch':>7} | "
              f"{'vs numpy':>8} | {'vs torch':>8} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    rng = np.random.default_rng(0)
    by_case = {}
    for op in ops:
        op_shapes = shapes if args.shape or op.shapes is None else op.shapes
        cases = [(name, shape, -1) for name, shape in op_shapes.items()]
        if op.axis0 and not args.shape:
            cases.append(("x".join(map(str, B.AXIS0_SHAPE)), B.AXIS0_SHAPE, 0))
        for shape_name, shape, axis in cases:
            d = op.make(shape, args.dtype, rng, axis)
            src = B.main_array(d)
            dst = np.empty_like(src)
            fns = {
                "copy": lambda: np.copyto(dst, src),
                "jitloss": lambda: op.run(d),
                "numpy": lambda: op.numpy(d),
            }
            if torch is not None and op.torch is not None:
                td = B.torch_inputs(d)
                fns["torch"] = lambda: op.torch(td)
            if axis == 0:
                # the same number of elements along the last axis, timed in the same
                # rounds, so the axis-0 / axis-(-1) ratio does not span minutes of noise
                d_rows = op.make(B.AXIS0_SHAPE[::-1], args.dtype, rng, -1)
                fns["rows"] = lambda: op.run(d_rows)
            samples = B.interleaved_samples(fns, rounds=args.rounds)
            by_case[(op.name, shape_name, axis)] = samples
            c = statistics.median(samples["copy"])
            t_jit = statistics.median(samples["jitloss"])

            def ratio(a, b, fmt):
                return format(B.paired_ratio(samples, a, b), fmt) + "x" if a in samples else "-"

            print(f"| {op.name:<32} | {shape_name:<12} | {axis:>4} | {c * 1e6:>9.1f} | "
                  f"{t_jit * 1e6:>10.1f} | {ratio('jitloss', 'copy', '>6.2f'):>7} | "
                  f"{ratio('numpy', 'copy', '>6.2f'):>7} | {ratio('torch', 'copy', '>6.2f'):>7} | "
                  f"{ratio('numpy', 'jitloss', '>7.2f'):>8} | "
                  f"{ratio('torch', 'jitloss', '>7.2f'):>8} |", flush=True)
    shape0 = "x".join(map(str, B.AXIS0_SHAPE))
    for op in ops:
        a0 = by_case.get((op.name, shape0, 0))
        if a0:
            print(f"# {op.name} along axis 0 of {shape0} / along axis -1 of "
                  f"{'x'.join(map(str, B.AXIS0_SHAPE[::-1]))}, interleaved in the same rounds: "
                  f"{B.paired_ratio(a0, 'jitloss', 'rows'):.2f}x")
    if args.startup:
        _startup(args.python or sys.executable)
    if args.memory:
        _memory(torch is not None)
    return 0


def _memory(with_torch: bool) -> None:
    from ._bench import peak_rss_growth

    one_copy = 1024 * 128256 * 4 / 2**20
    print(f"# peak RSS growth across one cross-entropy forward+backward, 1024x128256 float32 "
          f"in a fresh process (one copy of the logits: {one_copy:.0f} MiB):")
    variants = ["grad_out", "allocated"] + (["torch"] if with_torch else [])
    labels = {"grad_out": "jitloss, grad_out=logits", "allocated": "jitloss, new gradient",
              "torch": "PyTorch F.cross_entropy + backward"}
    for v in variants:
        print(f"#   {labels[v]:<36} {peak_rss_growth(v):8.1f} MiB")


def _bench_cuda(args) -> int:
    """Device times (events around repeated calls), against a device-to-device copy of the
    same bytes and PyTorch CUDA when installed; achieved bandwidth in GB/s."""
    from numba import cuda

    from . import _bench as B

    if not _cuda_ok():
        print("no CUDA device (and NUMBA_ENABLE_CUDASIM is not set)")
        return 1
    try:
        import torch

        has_torch = torch.cuda.is_available()
    except ImportError:
        has_torch = False
    ops = [B.OPS[name] for name in args.op] if args.op else list(B.OPS.values())
    name = _cuda_summary()
    print(f"# jitloss bench --device cuda: {name}, {args.dtype}; medians of {args.rounds} "
          f"rounds; GB/s counts one read of the inputs and one write of each output")
    print(f"| {'function':<32} | {'shape':<12} | {'copy us':>8} | {'jitloss us':>10} | "
          f"{'GB/s':>7} | {'of copy':>7} | {'torch us':>9} | {'vs torch':>8} |")
    print("|" + "|".join("-" * n for n in (34, 14, 10, 12, 9, 9, 11, 10)) + "|")
    rng = np.random.default_rng(0)
    for op in ops:
        shapes = {s: B.parse_shape(s) for s in args.shape} if args.shape else (
            op.shapes or B.CUDA_SHAPES)
        for shape_name, shape in shapes.items():
            host = op.make(shape, args.dtype, rng, -1)
            d = _to_device(host)
            src = B.main_array(d)
            dst = cuda.device_array_like(src)
            run = lambda: op.run(d)  # noqa: E731
            out = run()
            out = out if isinstance(out, tuple) else (out,)
            moved = sum(v.nbytes for v in d.values() if hasattr(v, "nbytes"))
            moved += sum(getattr(o, "nbytes", 0) for o in out)
            t_copy = B.device_median(lambda: dst.copy_to_device(src), args.rounds)
            t_jit = B.device_median(run, args.rounds)
            t_torch = None
            if has_torch and op.torch is not None:
                td = {k: torch.as_tensor(v, device="cuda") if isinstance(v, np.ndarray) else v
                      for k, v in host.items()}
                t_torch = B.device_median(lambda: op.torch(td), args.rounds,
                                          sync=torch.cuda.synchronize)
            gbs = moved / t_jit / 1e9
            copy_gbs = 2 * src.nbytes / t_copy / 1e9
            print(f"| {op.name:<32} | {shape_name:<12} | {t_copy * 1e6:>8.1f} | "
                  f"{t_jit * 1e6:>10.1f} | {gbs:>7.0f} | {gbs / copy_gbs:>6.0%} | "
                  + (f"{t_torch * 1e6:>9.1f} | {t_torch / t_jit:>7.2f}x |" if t_torch
                     else f"{'-':>9} | {'-':>8} |"), flush=True)
    return 0


def _startup(python: str, runs: int = 11) -> None:
    """Fresh-process cost of import + a first small call, against `import numba`, and the
    floor every numba library pays: `import numba` + the first call of a one-line cached
    njit function (numba then sets up its compiler and runtime once per process).

    ``python`` runs the processes: another environment's interpreter (one with only the
    core install, say) can be timed from this one.  Whether SciPy is importable there is
    printed: numba's first call imports scipy.linalg when it is (about 0.1-0.2 s)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "_jitloss_floor.py"), "w") as f:
            f.write("import numba\n\n\n@numba.njit(cache=True)\n"
                    "def one(x):\n    return x + 1.0\n")
        codes = {
            "import numba": "import numba",
            "numba floor": f"import sys; sys.path.insert(0, {tmp!r}); "
                           "import _jitloss_floor; _jitloss_floor.one(1.0)",
            "jitloss": "import numpy as np, jitloss; jitloss.softmax(np.ones(14))",
        }
        # warm caches are numba's and Python's bytecode (.pyc) alike: without the latter
        # (PYTHONDONTWRITEBYTECODE set) every process compiles jitloss's sources, ~0.05 s
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        for code in codes.values():  # warm the caches
            subprocess.run([python, "-c", code], check=True, env=env)
        has_scipy = subprocess.run(
            [python, "-c", "import importlib.util, sys; "
                           "sys.exit(importlib.util.find_spec('scipy') is None)"], env=env,
        ).returncode == 0
        samples = {label: [] for label in codes}
        for _ in range(runs):  # interleaved, like the kernel timings
            for label, code in codes.items():
                t0 = time.perf_counter()
                subprocess.run([python, "-c", code], check=True, env=env)
                samples[label].append(time.perf_counter() - t0)
    t = {label: statistics.median(v) for label, v in samples.items()}
    base = t["import numba"]
    where = "" if python == sys.executable else f" with {python}"
    print(f"# startup{where} (warm cache, medians of {runs}; SciPy "
          f"{'installed' if has_scipy else 'not installed'}): "
          f"python -c 'import numba' {base:.3f} s; "
          f"import jitloss + softmax of 14 elements {t['jitloss']:.3f} s "
          f"(+{t['jitloss'] - base:.3f} s); numba's own floor, import numba + first call of "
          f"a one-line cached njit function, {t['numba floor']:.3f} s "
          f"(+{t['numba floor'] - base:.3f} s)")


def _demo(args) -> int:
    from ._demo import main as demo_main

    return demo_main()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jitloss", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, threading, SVML, CUDA, cache directory")
    c = sub.add_parser("check", help="every public function against a float64 reference")
    c.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    b = sub.add_parser("bench", help="time each function against np.copyto, NumPy, PyTorch")
    b.add_argument("--op", action="append", help="function name (repeatable); default all")
    b.add_argument("--shape", action="append", help="RowsxClasses, e.g. 4096x1000")
    b.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16"])
    b.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    b.add_argument("--rounds", type=int, default=15, help="interleaved rounds per case")
    b.add_argument("--startup", action="store_true", help="also time a fresh process")
    b.add_argument("--python", metavar="PATH",
                   help="interpreter --startup times (default: this one), e.g. that of an "
                        "environment with only the core install")
    b.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    b.add_argument("--memory", action="store_true",
                   help="also measure the peak-memory growth of cross_entropy_with_grad")
    sub.add_parser("demo", help="train a small classifier with cross_entropy_with_grad")
    args = parser.parse_args(argv)
    return {"info": _info, "check": _check, "bench": _bench, "demo": _demo}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
