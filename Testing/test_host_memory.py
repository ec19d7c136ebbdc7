"""The available-memory probe on each platform, by simulation: Linux's /proc/meminfo, Windows'
GlobalMemoryStatusEx (through ctypes, with the kernel call stood in for), macOS's vm_stat output, and the
conservative fallback where a probe is missing (no /proc, no os.sysconf, no SC_AVPHYS_PAGES)."""

from __future__ import annotations

import ctypes
import os

import pytest

from EdranFusionLib.network import host_memory
from EdranFusionLib.network.host_memory import (
    FALLBACK_BYTES,
    available_memory_bytes,
    linux_available,
    macos_available,
    windows_available,
)

VM_STAT = """Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                               12000.
Pages active:                            300000.
Pages inactive:                           98000.
Pages speculative:                         2000.
Pages throttled:                              0.
Pages wired down:                        150000.
"""


def test_linux_reads_mem_available(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:          100000 kB\nMemAvailable:    8000000 kB\n")
    assert linux_available(meminfo) == 8000000 * 1024


def test_this_machine_reports_a_plausible_figure():
    assert 64 << 20 < available_memory_bytes() < 1 << 50


class _Kernel32:
    """Stands in for ctypes.windll.kernel32: fills the caller's MEMORYSTATUSEX as Windows does."""

    def __init__(self, available: int, succeed: bool = True) -> None:
        self.available, self.succeed = available, succeed

    def GlobalMemoryStatusEx(self, pointer) -> int:  # noqa: N802 (the Win32 name)
        status = ctypes.cast(pointer, ctypes.POINTER(host_memory._MemoryStatusEx)).contents
        assert status.dwLength == ctypes.sizeof(host_memory._MemoryStatusEx) == 64
        status.ullAvailPhys = self.available
        return int(self.succeed)


def test_windows_asks_global_memory_status_ex():
    assert windows_available(_Kernel32(6 << 30)) == 6 << 30
    with pytest.raises(OSError):
        windows_available(_Kernel32(1, succeed=False))


def test_windows_without_sysconf_falls_back(monkeypatch):
    """On Windows (no windll here, and no os.sysconf there) a failing probe gives the fallback, no crash."""
    monkeypatch.delattr(os, "sysconf")
    assert available_memory_bytes("win32") == FALLBACK_BYTES


def test_windows_branch_is_chosen_on_win32(monkeypatch):
    monkeypatch.setattr(ctypes, "windll", type("WinDLL", (), {"kernel32": _Kernel32(5 << 30)})(), raising=False)
    assert available_memory_bytes("win32") == 5 << 30


def test_macos_adds_free_inactive_and_speculative_pages():
    assert macos_available(lambda: VM_STAT) == (12000 + 98000 + 2000) * 16384


def test_macos_branch_is_chosen_on_darwin(monkeypatch):
    monkeypatch.setattr(host_memory, "_run_vm_stat", lambda: VM_STAT)
    assert available_memory_bytes("darwin") == (12000 + 98000 + 2000) * 16384


def test_macos_without_vm_stat_or_avphys_pages_falls_back_to_a_quarter_of_ram(monkeypatch):
    def missing() -> str:
        raise FileNotFoundError("vm_stat")

    physical = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 4 << 20}  # 16 GiB; macOS has no SC_AVPHYS_PAGES
    monkeypatch.setattr(os, "sysconf", lambda name: physical[name])
    with pytest.raises(FileNotFoundError):
        macos_available(missing)
    monkeypatch.setattr(host_memory, "_run_vm_stat", missing)
    assert available_memory_bytes("darwin") == (16 << 30) // 4


def test_linux_without_proc_falls_back(monkeypatch):
    monkeypatch.setattr(host_memory, "linux_available", lambda: (_ for _ in ()).throw(FileNotFoundError()))
    monkeypatch.setattr(os, "sysconf", lambda name: {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 1 << 20}[name])
    assert available_memory_bytes("linux") == (4 << 30) // 4
