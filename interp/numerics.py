"""Process-wide numerical set-up: what makes training and analysis fast and reproducible on a CPU.

Three settings that belong to the process, not to one computation: glibc keeps freed memory
(``retain_freed_memory``), subnormal floats are flushed to zero (``flush_subnormals``), and MKL's
vector math is initialised from one thread before any parallel call (``warm_up_vector_math``).
The trainer applies all three before its first tensor operation; the fast path and the loss
apply the warm-up on their first call.
"""

from __future__ import annotations

import functools

import torch


def retain_freed_memory() -> None:
    """Ask glibc to keep freed memory instead of handing it back to the kernel (Linux only).

    A training step allocates and frees a few dozen tensors of 1-20 MB. By default glibc maps
    such blocks fresh from the kernel and unmaps them on free, so every step pays page faults
    and page zeroing on ~100 MB (measured: 12% of the canonical step on 2 cores). Raising the
    mmap threshold to its maximum (32 MB) and the trim threshold to 1 GB makes freed blocks
    reusable. The cost is that the process keeps its peak heap; called by the trainer and the
    checkpoint analysis, which allocate such blocks.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): keep the default
        pass


def flush_subnormals() -> None:
    """Compute with subnormal floats (|x| < 1.2e-38 in float32) flushed to zero (FTZ/DAZ), on
    every thread that runs torch's CPU work.

    Late in training, once the loss is ~1e-7, gradients and activations produce subnormal
    numbers, which x86 CPUs handle hundreds of times slower than normal ones: measured here, the
    canonical step went from 30 ms at epoch 0 to 59 ms at epoch 23,400 (2 threads), and back to
    29 ms with subnormals flushed. Flushing changes only values below 1.2e-38 (Adam's eps is
    1e-8). The setting is per thread: ``torch.set_flush_denormal`` sets it on the calling thread,
    and threads started later copy it, but in a Python session that already ran parallel torch
    work the pool's threads exist and would keep computing with subnormals, so each half of a
    parallel operation would round its own way (an ensemble member then differed from its single
    run in the last bit). The setting is therefore also made on every thread of the pool
    (``_on_every_pool_thread``). Called by the trainer before its first tensor operation.
    """
    torch.set_flush_denormal(True)
    _on_every_pool_thread(lambda: torch.set_flush_denormal(True))


def _on_every_pool_thread(fn) -> bool:
    """Run ``fn()`` once on each thread of torch's OpenMP pool (the calling thread included).

    Opens one OpenMP parallel region of ``torch.get_num_threads()`` threads through the GNU
    OpenMP runtime that torch's CPU build ships (``torch/lib/libgomp*``) and runs ``fn`` in each:
    OpenMP keeps those threads for later regions, which are the ones torch's and MKL's parallel
    kernels run on. Returns False, doing nothing, where torch has no such runtime (other builds,
    other platforms): there only threads started afterwards are covered.
    """
    import ctypes
    import glob
    import os

    libs = sorted(glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp*.so*")))
    if not libs:
        return False
    if torch.get_num_threads() < 2:
        fn()
        return True
    try:
        gomp = ctypes.CDLL(libs[0])  # already loaded by torch: the same runtime and pool
        region = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
        gomp.GOMP_parallel.argtypes = [region, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        gomp.GOMP_parallel.restype = None
    except (OSError, AttributeError):
        return False
    errors = []

    def each(_):
        try:
            fn()
        except Exception as e:  # an exception must not cross the C frames of the region
            errors.append(e)

    callback = region(each)  # kept referenced until the region has returned
    gomp.GOMP_parallel(callback, None, torch.get_num_threads(), 0)
    if errors:
        raise errors[0]
    return True


# The element-wise functions PyTorch hands to MKL's vector math library (VML) on x86, in both
# precisions. Trainer and analyses use exp; sqrt (probes), erf and tanh (GELU), log are the rest.
_VML_FUNCTIONS = ("exp", "log", "sqrt", "erf", "tanh")


@functools.cache  # once per process: the race is in the library's first calls
def warm_up_vector_math() -> None:
    """Call each VML function once in one thread, then once from every thread of the pool.

    Measured here (torch 2.13 CPU, 2 threads): in 4 trainer starts of 150, the first parallel
    ``exp`` of a process came out up to 16 ulp off on the worker thread's half of the tensor
    (elements 22,980-45,959 of 45,960; the main thread's half and every later call were exact).
    That is a race in the library's first-call set-up, and the canonical run, whose grokking
    time moves by thousands of epochs with rounding, then trains differently from an identical
    invocation: T_grok 15,380 instead of 17,040. Initialising each function from one thread
    first, before any parallel call, removed it (0 starts of 180); the calls' results are discarded.
    Called by the trainer before its first tensor operation, and by the '=' fast path and the
    loss on their first call, so every analysis that computes logits or losses is covered too.
    """
    for dtype in (torch.float32, torch.float64):
        for n in (1, 1 << 17):  # one element: this thread alone; 2^17: split across the pool
            x = torch.full((n,), 0.5, dtype=dtype)
            for name in _VML_FUNCTIONS:
                getattr(torch, name)(x)
