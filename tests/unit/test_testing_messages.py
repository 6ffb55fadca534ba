"""emu.testing's failure messages: a Service target gets a pointer to its endpoints, not explain's error."""
from __future__ import annotations

import pytest

from emu import testing


@pytest.mark.parametrize("to", ["svc/default/web:80", "nodeport/node-1:30080", "lb/default/web"])
def test_a_service_target_is_explained_by_its_endpoints(to):
    text = testing._explain_text(None, {"from": "default/client", "to": to, "proto": "tcp", "port": 80})  # type: ignore[arg-type]
    assert text == (f"{to} is a Service: NetworkPolicies apply to the endpoint kube-proxy picks "
                    "(emu explain default/client NS/POD for one of them)")
