"""Memory available to this process on Linux, Windows and macOS, without third-party packages (torch-free).

Linux reads MemAvailable from /proc/meminfo; Windows asks GlobalMemoryStatusEx through ctypes (it has no
``os.sysconf``); macOS adds free, inactive and speculative pages from ``vm_stat`` (it lacks SC_AVPHYS_PAGES).
Where a probe fails, a conservative guess is used: a quarter of the physical memory, or 1 GiB.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

FALLBACK_BYTES = 1 << 30
_MACOS_AVAILABLE_PAGES = ("Pages free", "Pages inactive", "Pages speculative")


def linux_available(meminfo: Path = Path("/proc/meminfo")) -> int:
    fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
    return int(fields["MemAvailable"].split()[0]) * 1024


class _MemoryStatusEx(ctypes.Structure):
    """Win32 MEMORYSTATUSEX."""

    _fields_ = [("dwLength", ctypes.c_uint32), ("dwMemoryLoad", ctypes.c_uint32),  # DWORD: 32 bits
                ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]


def windows_available(kernel32=None) -> int:
    """``kernel32`` defaults to ``ctypes.windll.kernel32`` (given by tests to simulate Windows)."""
    kernel32 = kernel32 if kernel32 is not None else ctypes.windll.kernel32
    status = _MemoryStatusEx()
    status.dwLength = ctypes.sizeof(_MemoryStatusEx)
    if not kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        raise OSError("GlobalMemoryStatusEx failed")
    return int(status.ullAvailPhys)


def _run_vm_stat() -> str:
    return subprocess.run(["vm_stat"], capture_output=True, text=True, check=True, timeout=5).stdout


def macos_available(vm_stat: Callable[[], str] | None = None) -> int:
    """``vm_stat`` returns the output of the ``vm_stat`` command (given by tests to simulate macOS)."""
    text = (vm_stat or _run_vm_stat)()
    page = re.search(r"page size of (\d+) bytes", text)
    counts = dict(re.findall(r"^([A-Za-z ]+):\s+(\d+)\.?$", text, re.M))
    pages = [int(counts[name]) for name in _MACOS_AVAILABLE_PAGES if name in counts]
    if page is None or not pages:
        raise ValueError("unexpected vm_stat output")
    return sum(pages) * int(page.group(1))


def conservative_guess() -> int:
    """A quarter of the physical memory where ``os.sysconf`` knows it, else 1 GiB."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 4
    except (AttributeError, ValueError, OSError):
        return FALLBACK_BYTES


def available_memory_bytes(platform: str = sys.platform) -> int:
    """Bytes this process could allocate now without swapping, by the platform's own measure."""
    probes = {"win32": windows_available, "darwin": macos_available}
    probe = probes.get(platform, linux_available)
    try:
        return probe()
    except (OSError, KeyError, ValueError, AttributeError, subprocess.SubprocessError):
        return conservative_guess()
