"""`python -m emu.cluster.agent --dir DIR`: the agent daemon (emu.cluster.agent.daemon)."""
from __future__ import annotations

import sys

from emu.cluster.agent.daemon import main

sys.exit(main())
