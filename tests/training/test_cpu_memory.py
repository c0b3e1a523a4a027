"""CPU training keeps freed memory for reuse (glibc malloc settings), unless switched off. (This sets them for the
rest of the test process, as every CPU training run in it would.)"""
import platform

import pytest

from nnunetv2_medals.training.cpu_memory import ENV, USER_SETTINGS, keep_freed_memory


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="malloc settings exist on glibc only")
def test_settings_apply_on_glibc_and_the_switch_or_a_users_own_settings_leave_them(monkeypatch):
    for name in USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(ENV, "0")
    assert keep_freed_memory() is False
    monkeypatch.delenv(ENV)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    assert keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    assert keep_freed_memory() is True
