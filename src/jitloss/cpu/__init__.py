"""CPU backend: numba.njit kernels, one module per family, and the launch policy they share.

Each family module holds launchers (plain Python: allocate outputs, pick serial or
parallel, call the kernel) and kernels (``njit(parallel=True, cache=True)`` loops that
take C-contiguous ``(outer, classes)`` rows or ``(outer, classes, inner)`` lanes).
Every kernel comes as a pair, ``_name`` (``prange``) and ``_name_serial`` (``range``),
whose loops call the same row function, so the two give bitwise-identical results; the
serial twin spares small inputs the parallel entry cost (about 0.7 us) and thread start.
"""

from __future__ import annotations

import functools
import threading

import numba
from numba.extending import register_jitable

# Below this many elements a kernel runs its serial loop: starting the thread pool costs
# more than the work (measured: about 10 us per parallel launch on 2 cores).
PARALLEL_MIN_ELEMENTS = 1 << 15
# Lanes processed together in the strided layout: at most LANE_ROW_BYTES of a class row per
# task, at least LANE_MIN lanes, as wide as the thread count allows (lane_width).  Wider
# pieces amortise the call per class row and let the hardware prefetchers follow; the
# block need not fit in L2 (with a power-of-two inner stride its pieces share a few cache
# sets and every pass fetches them from L3 anyway).  Measured along axis 0, float32
# softmax, 2 threads, emeraldrapids, time against the earlier rule (2 MiB of classes x
# lanes per task, so 64-128 lanes for thousands of classes): 4096 x 1000 0.58 at 512
# lanes, 8192 x 512 0.43 at 256, 32000 x 256 0.64 at 128; 1000 x 4096 1.5x the time at 128
# lanes, 1.14x at 256, 0.96x at 1024 than at 512.
LANE_ROW_BYTES = 2048
LANE_MIN = 64
# Unless the block of so many lanes would fill half of L2 (classes * LANE_ROW_BYTES): then
# no width keeps it there (the power-of-two stride again), every pass streams it from L3 or
# memory, and pieces of LANE_WIDE_BYTES, left to the hardware prefetchers (prefetch_lanes
# gives no hints for them), stream it best.  Float32 along axis 0, 2 threads,
# emeraldrapids, in-process against 2 KiB pieces with hints: 1000 x 4096 softmax 0.82 of the
# time, log_softmax 0.80, softmax_backward 0.68, cross_entropy_with_grad 0.86; 512 x 8192
# 0.77-0.89, 2000 x 2048 0.83-0.95.  With the hints kept, the wide pieces gained nothing
# (0.93-1.06), and at 300 or 256 classes (blocks in L2) they lost up to 1.17x (1.50x with
# hints), so those keep LANE_ROW_BYTES.
LANE_WIDE_BYTES = 8192

# Rows of at most GROUP_ROW_BYTES go through the row-group kernels, GROUP_BYTES of rows at a
# time (see cpu/softmax.py, "row groups").  Measured on emeraldrapids (float32, 2 threads,
# in-process against the row kernels): log_softmax 0.53-0.74 of the time at 10 to 128
# classes, logsumexp 0.44-0.67, cross-entropy 0.59-0.88; at 256 classes (1 KiB) grouped
# log_softmax measured 1.00-1.04 and cross_entropy_with_grad 1.11, so the bound was 512.
# On znver4, against the row kernels with their row functions inlined (session 22), up to
# 1 KiB grouped took less time: float32 at 160-256 classes log_softmax 0.85-0.91 (one
# thread 0.89-0.91), logsumexp 0.73-0.77, cross_entropy 0.78-0.79, with the gradient
# 0.85-0.93, probability targets 0.91-0.93 and with the gradient 0.94-0.99 (one thread
# 0.91-1.02); float64 at 80-128 classes 0.74-0.99.  At 2 KiB (384-512 classes) they were
# mixed: logsumexp 0.85-0.90, cross_entropy with probability targets and the gradient
# 1.03-1.27.
GROUP_ROW_BYTES = 1024
GROUP_BYTES = 16 << 10

# Rows of at most TILE_ROW_BYTES (cross-entropy; softmax, log_softmax and logsumexp until
# session 24, see SHORT_ROW_BYTES) are taken a tile at a time as the lanes of a (classes,
# rows) tile and go through the lane kernels (see cpu/cross_entropy.py, "row tiles"): rows
# shorter than 256 bytes (63 float32, 31 float64 classes).  The row kernels' loops take 64
# float32 (32 float64) elements per vector iteration and the rest one by one, so such a row
# runs scalar; a row of 64 runs well, and there tiles of 128 rows measured 0.93-1.18x its
# time (float32, 2 threads, emeraldrapids).
# From 33 to 63 float32 classes tiles of 128 rows took 0.54-0.97 of the time of the row
# kernels and row groups (softmax 0.73-0.97, log_softmax 0.54-0.83, cross_entropy_with_grad
# 0.78-1.07), from 17 to 31 float64 0.55-0.85 (cross_entropy_with_grad 0.81-0.88 at 18-20
# classes, 1.10-1.24 at 24-28: level on the whole, kept under the one rule).
TILE_ROW_BYTES = 252
# softmax, log_softmax and logsumexp take rows of at most SHORT_ROW_BYTES as vectors
# instead, however few (cpu/softmax.py, "short rows as vectors"): up to four vectors of 64
# bytes.
SHORT_ROW_BYTES = 256
# A tile holds up to TILE_BYTES (classes x rows; each class row at most LANE_WIDE_BYTES):
# wider tiles spread the lane blocks' work per class, and the tile's allocation, over more
# rows.  Float32, 2 threads, emeraldrapids (2 MiB L2), in-process against tiles of 128
# rows, the same bits: at 1024 rows (128 KiB at 32 classes) softmax, log_softmax and
# logsumexp took 0.73-0.91 of the time at 65536 x 32, 0.69-0.82 at 262144 x 10, 0.84-0.86
# at 2048 x 32, 0.75-0.81 at 4096 x 48, cross_entropy 0.81-0.90, with the gradient
# 0.77-0.86, probability targets with the gradient 0.65-0.84; at 2048 rows (256 KiB) 32
# classes measured 0.86-1.04.  Float64 at 512 rows: 0.78-1.00 at 65536 x 16, 32768 x 31
# and 2048 x 24; at 1024 rows (248 KiB) 32768 x 31 measured 0.80-0.98.  A tile is an
# odd number of cache lines wide (odd_lines), at most one line over TILE_BYTES: with a
# power of two (1024 float32 rows, 4 KiB a class row) a transposed block's 16 class rows
# all fall in one set of the L1 cache, which on znver4 (32 KiB, 8 ways) cannot hold them.
# Float32, 2 threads, znver4, in-process against the widths before, the same bits:
# 65536 x 32 softmax 0.87-1.00 of the time, log_softmax 0.81-0.93, logsumexp 0.90,
# cross_entropy 0.89, with the gradient 0.87; 262144 x 10 0.92-0.97, 65536 x 16
# 0.81-0.94, 4096 x 48 0.92-0.95, 2048 x 32 0.99-1.00; float64 65536 x 16, 32768 x 31
# and 262144 x 10 0.70-1.00, 4096 x 24 0.76-0.96; one thread 0.87-0.98.  (A transposed
# 16 x 16 block from L1 into a tile of 1024 float32 rows took 0.18 ns an element, into
# one of 1040 0.13.)
TILE_BYTES = 128 << 10
# and at most TILE_MAX_LINES cache lines a class row (1936 float32 rows, 968 float64): at
# 127 lines (2032 float32 rows, the LANE_WIDE_BYTES bound before session 27), which rows of
# up to 16 float32 classes took, some shapes ran slow in some processes (float32 with the
# gradient and class indices, 8 classes: 1.45-2.3x the time of 121 lines; 10 classes 1.6x
# in one process, 1.0 in another).  In-process against 127 lines (float32, 2 threads):
# class indices with the gradient 0.64-0.69 at 262144 x 8, 0.92-0.93 at 149796 x 14,
# 0.97-1.04 at 10, 12 and 16 classes; probability targets 0.43 at 524288 x 4 and 0.73 at
# 262144 x 8 (the loss alone), 0.84-1.00 with the gradient; float64 with the gradient
# 0.89-0.98 at 4-8 classes; the loss alone with class indices 0.96-1.02.
TILE_MAX_LINES = 121
# Fewer rows take the row kernels: the tiles' scratch costs more than the rows' chains
# (measured, float32 softmax of 14 classes: 1.44x the time at 4 rows, 1.23 at 8, 0.94 at
# 16, 0.81 at 32).  Rows longer than TILE_SHORT_BYTES tile only from TILE_LONG_MIN_ROWS
# rows on: a narrow tile's lane block calls a helper per class and pass for a vector or two
# of lanes (against the row kernels, float32, 2 threads: 40 classes 1.10-1.45x the time at
# 16 and 32 rows, 0.97-1.19 at 64, 0.73-1.05 at 128; 63 classes 0.99-1.24 at 32 rows,
# 0.84-1.01 at 64, 0.67-0.80 at 128).
TILE_MIN_ROWS = 16
TILE_SHORT_BYTES = 128
TILE_LONG_MIN_ROWS = 128
# Cross-entropy takes its rows as vectors (cpu/cross_entropy.py, "short rows as vectors")
# from rows longer than these up to SHORT_ROW_BYTES, and the row tiles below: with the
# gradient from 64 bytes, the loss alone from 128 (session 27).  Float32, 2 threads,
# znver4, in-process against the code before (8 MiB of logits): class indices with the
# gradient 0.46 of the time at 20 classes, 0.73 at 24, 0.74-0.84 at 32, 0.59 at 40, 0.67
# at 48, 0.73-0.81 at 63, but 1.30-1.55x at 10 (0.65 at 12, 1.00 at 16, 0.92 at 8: the
# tiles' time there swings with the width); the loss alone 1.46x at 12, 1.28x at 16, 1.25x
# at 20, 1.16x at 24, 0.99-1.05 at 32, 0.58-0.95 at 40, 0.87 at 48, 0.76-0.79 at 63,
# 0.65-0.71 at 64 (row groups before); float64 with the gradient 0.47 at 12, 0.81 at 16,
# 0.77 at 24, 0.86 at 32, the loss alone 0.91 at 24, 0.76 at 32.  Probability targets with
# the gradient 0.91 at 24, 0.75 at 32, 0.81 at 40, 0.57 at 63, 0.79 at 64 (from 97 bytes
# against the row groups, which had taken their place from the tiles since session 22),
# 0.98 at 20; the loss alone 1.00 at 40, 0.78-0.79 at 63-64.
SHORT_CE_GRAD_MIN_BYTES = 64
SHORT_CE_LOSS_MIN_BYTES = 128


@register_jitable
def tile_rows(rows: int, classes: int, itemsize: int, most: int = TILE_ROW_BYTES) -> bool:
    """True if (rows, classes) rows take the row tiles: rows of at most ``most`` bytes
    (TILE_ROW_BYTES, or a family's own bound), at least TILE_MIN_ROWS of them, and
    TILE_LONG_MIN_ROWS of them if they are longer than TILE_SHORT_BYTES.  Shape and dtype
    only, like group_rows."""
    row = classes * itemsize
    least = TILE_MIN_ROWS if row <= TILE_SHORT_BYTES else TILE_LONG_MIN_ROWS
    return rows >= least and row <= most


@register_jitable
def short_rows(classes: int, itemsize: int, least: int = -1) -> bool:
    """True if rows of ``classes`` elements take the short-row kernels: at most
    SHORT_ROW_BYTES (64 float32 or 32 float64 classes, four vectors of 64 bytes) and more
    than ``least`` bytes (any row by default, or a family's own bound: cross-entropy's
    SHORT_CE_GRAD_MIN_BYTES and SHORT_CE_LOSS_MIN_BYTES), in a family that has them
    (softmax, log_softmax, logsumexp, the backward functions, cross-entropy)."""
    return least < classes * itemsize <= SHORT_ROW_BYTES


@register_jitable
def tile_top(classes: int, itemsize: int) -> int:
    """Rows of the widest tile of rows of ``classes`` elements: about TILE_BYTES in all
    (at most a cache line's rows more) and at most TILE_MAX_LINES cache lines a class row
    (within LANE_WIDE_BYTES, the lane blocks' stack pieces), in an odd number of whole
    cache lines (odd_lines; 528 to 1936 float32 rows, 264 to 968 float64, for the rows
    that tile_rows admits).  A serial kernel's tiles."""
    line = 64 // itemsize
    wide = min(TILE_MAX_LINES, LANE_WIDE_BYTES // 64)
    lines = max(1, min(wide, TILE_BYTES // (max(1, classes) * itemsize) // line))
    return odd_lines(lines, wide) * line


@register_jitable
def odd_lines(lines: int, most: int) -> int:
    """``lines`` if odd, else the odd number next to it: above if that is at most
    ``most``, else below (see TILE_BYTES: a tile's class rows then fall in different
    cache sets)."""
    if lines % 2:
        return lines
    return lines + 1 if lines < most else lines - 1


_tile_top = functools.lru_cache(maxsize=256)(tile_top)  # for Python callers: 0.1 us, not 0.5


def tile_width_for(x2) -> int:
    """Rows per tile for the (rows, classes) array x2 and the threads that would run it:
    tile_top on one thread; on several, as many tiles per thread as tiles of tile_top
    rows would need, each the thread's even share of the rows divided among them, rounded
    up to an odd number of whole cache lines (odd_lines): the busiest thread takes at
    most two lines' rows per tile more than its share, and no tile is narrower than it
    must be (a tile's results do not depend on its width).  Computed, not searched as
    lane_width searches its widths (15-30 us of Python for each new shape)."""
    rows, classes = x2.shape
    top = _tile_top(classes, x2.itemsize)
    threads = threads_for(x2.size)
    if threads <= 1:
        return top
    line = 64 // x2.itemsize
    per_thread = -(-rows // (threads * top))
    even = -(-rows // (threads * per_thread))
    return odd_lines(-(-even // line), top // line) * line


_parallel_lock = threading.Lock()


@register_jitable
def group_rows(rows: int, classes: int, itemsize: int) -> int:
    """Rows per group for ``rows`` rows of ``classes`` elements: 0 for rows longer than
    GROUP_ROW_BYTES, and for a single row (they take the row kernels: one row has no
    other to overlap with, and its group's scratch cost 0.2-0.3 us of a 1.5-2.7 us call).
    Shape and dtype only, never the thread count."""
    row = max(1, classes * itemsize)
    if row > GROUP_ROW_BYTES or rows < 2:
        return 0
    return min(256, max(8, GROUP_BYTES // row))


@functools.lru_cache(maxsize=256)
def lane_width(outer: int, inner: int, itemsize: int, threads: int,
               row_bytes: int = LANE_ROW_BYTES) -> int:
    """Number of inner lanes a strided kernel processes per task, for ``outer`` x ``inner``
    lanes on ``threads`` threads: whole cache lines, at least LANE_MIN, at most
    ``row_bytes`` of a class row, and of those the width that leaves the busiest thread
    the least work (the widest among equals), a task counting LANE_MIN lanes more than
    it has: its calls per class row cost about that much (55-100 lanes' worth, float32
    along the class axis of 1000 x 9000 and 8 x 100 x 3000).  Counting lanes alone chose
    tiles of 96 and 64 lanes there, which took 1.25-2.1x the time of 512.  A lane's
    results do not depend on the width (see lanes_range), so it may follow the thread
    count."""
    line = max(1, 64 // itemsize)
    top = max(LANE_MIN, row_bytes // itemsize)
    if threads <= 1:
        return top
    best, width = 0, top
    for w in range(LANE_MIN, top + 1, line):
        tasks = outer * -(-inner // w)
        load = -(-tasks // threads) * (min(w, inner) + LANE_MIN)
        if not best or load <= best:
            best, width = load, w
    return width


def lane_width_for(a3) -> int:
    """lane_width for the (outer, classes, inner) array a3 and the threads that would run
    it (numba's thread count for a parallel-sized input, else 1), with pieces of up to
    LANE_WIDE_BYTES where the classes times LANE_ROW_BYTES fill half of L2 or more."""
    wide = a3.shape[1] * LANE_ROW_BYTES >= l2_bytes() // 2
    return lane_width(a3.shape[0], a3.shape[2], a3.itemsize, threads_for(a3.size),
                      LANE_WIDE_BYTES if wide else LANE_ROW_BYTES)


@functools.cache
def l2_bytes(default: int = 512 << 10) -> int:
    """Size of the first CPU's L2 cache (Linux sysfs), else ``default``."""
    return cache_bytes(2, default)


@functools.cache
def l3_bytes(default: int = 32 << 20) -> int:
    """Size of the first CPU's L3 cache (Linux sysfs; on AMD, its CCX's), else ``default``."""
    return cache_bytes(3, default)


def _cache_info(level: int) -> dict:
    """The sysfs files (level, type, size, shared_cpu_list) of the first CPU's unified or
    data cache of ``level``, as stripped strings; empty where Linux sysfs does not say."""
    import glob

    for d in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        info = {}
        for name in ("level", "type", "size", "shared_cpu_list"):
            try:
                with open(f"{d}/{name}") as f:
                    info[name] = f.read().strip()
            except OSError:
                pass
        if info.get("level") == str(level) and info.get("type") != "Instruction":
            return info
    return {}


def cache_bytes(level: int, default: int) -> int:
    """Size of the first CPU's unified or data cache of ``level`` (Linux sysfs), else
    ``default``."""
    size = _cache_info(level).get("size", "")
    shift = {"K": 10, "M": 20}.get(size[-1:])
    return int(size[:-1]) << shift if shift is not None and size[:-1].isdigit() else default


def online_lanes(a3) -> bool:
    """True where softmax's lane blocks take their range and sums in one read and their
    exponentials again in the output pass (_math.lanes_online_total): float32 arrays that
    stream from memory between the passes, in strided pieces.  That is, arrays of at least
    3/8 of L3 (with their output, 3/4), with class rows longer than LANE_ROW_BYTES, whose
    blocks of classes x LANE_WIDE_BYTES (or the whole class row, if shorter), one for each
    CPU that shares the L3, fill a third of it or more.  A choice by the array and the
    machine alone, not by the lane width or the thread count, so that the results do not
    depend on those.

    Float32 softmax along axis 0, 2 threads, znver4 (32 MiB L3 shared by both vCPUs),
    in-process against the range, the stored exponentials and the scaling: 1000 x 4096
    (16 MB) 0.87-0.96 of the time, 0.72-0.88 between NumPy's and PyTorch's softmax as in
    ``bench``; 2000 x 2048 0.76-0.96, 4000 x 1024 0.72-0.90, 8000 x 1024 0.70, 8 x 1000 x
    2048 along axis 1 0.93-0.96.  Elsewhere it was slower or mixed, the second exponential
    costing more than the memory passes it saves: class rows of 2 KiB or less, whose
    blocks stream at the memory's bandwidth (16 x 4000 x 512 along axis 1 1.19, 16 x 2000
    x 512 1.18-1.25, 64 x 4000 x 128 1.07-1.29), blocks that stay in L3 (256 x 8192
    1.13-1.25, 300 x 4096 0.93-1.10, 100 x 4096 1.29-1.52) and arrays that do (1000 x 2048,
    8 MB, 0.98-1.12); 1000 x 500 0.83-0.90 and 100 x 40000 0.88-0.95, left out.
    """
    if a3.itemsize != 4 or a3.nbytes < l3_bytes() * 3 // 8:
        return False
    row = a3.shape[2] * a3.itemsize
    blocks = a3.shape[1] * min(row, LANE_WIDE_BYTES) * l3_sharing()
    return row > LANE_ROW_BYTES and 3 * blocks >= l3_bytes()


@functools.cache
def l3_sharing(default: int = 1) -> int:
    """The CPUs that share the first CPU's L3 (Linux sysfs), else ``default``."""
    cpus = _cache_info(3).get("shared_cpu_list", "")
    n = 0
    for part in filter(None, cpus.split(",")):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return default
        n += int(hi or lo) - int(lo) + 1
    return n or default


def threads_for(size: int) -> int:
    """The numba threads a kernel over ``size`` elements may run on: numba's thread count
    from PARALLEL_MIN_ELEMENTS elements on, else 1 (``run`` picks the twin by it)."""
    return numba.get_num_threads() if size >= PARALLEL_MIN_ELEMENTS else 1


def run_rows(row_kernels, group_kernels, x2, *args, tile_kernels=None, short_kernels=None,
             short_min_bytes=0):
    """``run`` for rows: the twins ``short_kernels`` for the rows that short_rows admits
    (rows longer than ``short_min_bytes``), else the twins ``tile_kernels`` for the rows
    that tile_rows admits (the rows per tile from tile_width_for appended to the
    arguments), else ``group_kernels`` (G from group_rows appended to the arguments) for
    a batch of short rows of the (rows, classes) array x2, otherwise the twins
    ``row_kernels``; x2 is the kernels' first argument.  A family without tiles or groups
    passes None."""
    rows, classes = x2.shape
    if short_kernels is not None and short_rows(classes, x2.itemsize, short_min_bytes):
        return run(*short_kernels, x2.size, x2, *args)
    if tile_kernels is not None and tile_rows(rows, classes, x2.itemsize):
        return run(*tile_kernels, x2.size, x2, *args, tile_width_for(x2))
    G = group_rows(rows, classes, x2.itemsize) if group_kernels is not None else 0
    if G:
        return run(*group_kernels, x2.size, x2, *args, G)
    return run(*row_kernels, x2.size, x2, *args)


def run(serial_kernel, parallel_kernel, size: int, *args):
    """Call ``parallel_kernel(*args)`` for large inputs, else ``serial_kernel(*args)``.

    The two kernels are twins: the same row function under a ``prange`` or a ``range``
    loop, so they give bitwise-identical results.  The parallel one runs only for large
    inputs, with more than one numba thread, and while no other Python thread is inside
    a parallel kernel (numba's workqueue layer is not thread-safe, and two thread pools on
    the same cores only contend); a call that finds the pool busy runs serially.  A serial
    twin first takes ``borrowed`` views of its array arguments (``cpu/_math.py``): a
    ``prange`` body receives its arrays without a reference count, and so must the row
    functions a ``range`` loop calls (with counts, 40-50 ns more per row).
    """
    if threads_for(size) > 1:
        if _parallel_lock.acquire(blocking=False):
            try:
                return parallel_kernel(*args)
            finally:
                _parallel_lock.release()
    return serial_kernel(*args)
