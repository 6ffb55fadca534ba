"""The kernel lane returns the command's exit status (QEMU itself always exits 0). Boots the VM twice (about 6 s
each once the kernel is cached), so it runs only from tools/kernel-lane/run-tests (EMU_LANE_TESTS=1)."""
from __future__ import annotations

import io

import pytest

from emu.lane import vm as kernel_lane

pytestmark = [pytest.mark.integration, pytest.mark.lane]


@pytest.mark.parametrize(("cmd", "status"), [(["true"], 0), (["sh", "-c", "echo from the guest; exit 3"], 3)])
def test_exit_status_follows_the_command(cmd, status):
    out = io.BytesIO()
    assert kernel_lane.run(cmd, timeout=300, out=out) == status
    if status:
        assert b"from the guest\n" in out.getvalue()
