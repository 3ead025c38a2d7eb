"""Helpers every stage shares: native bfloat16 detection, and handing freed memory back."""

import ctypes.util
import sys
from pathlib import Path

import pytest

from ric.runtime import native_bfloat16, release_memory


def test_native_bfloat16_reads_the_cpu_flags():
    assert native_bfloat16("cpu", "flags : fpu avx2 avx512f avx512_bf16 amx_tile")
    assert native_bfloat16("cpu", "flags : fpu avx2 amx_bf16")
    assert not native_bfloat16("cpu", "flags : fpu avx2 avx512f avx512_fp16")
    assert not native_bfloat16("cpu", "")


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or ctypes.util.find_library("c") != "libc.so.6",
    reason="malloc_trim is glibc's",
)
def test_release_memory_hands_freed_heap_holes_back():
    # 64 KiB blocks come from glibc's heap (under its mmap threshold). Freeing 9 of every 10
    # leaves holes that glibc keeps (the live blocks pin the heap's top); malloc_trim returns
    # their pages.
    blocks = [bytearray(64 * 1024) for _ in range(4000)]  # 250 MiB, each page touched
    kept = blocks[::10]
    del blocks
    before = resident_mb()
    release_memory()
    after = resident_mb()
    assert before - after > 100, f"resident {before:.0f} MB -> {after:.0f} MB"
    assert len(kept) == 400
