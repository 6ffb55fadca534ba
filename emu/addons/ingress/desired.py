"""The Ingress addon's desired state, pure: the ingress-nginx controller's nginx.conf, its warnings, the TLS
Secrets' certificate files, the external host's /etc/hosts and nginx itself, as emu.addons.ingress.controller
writes and starts them when an Ingress is served (for `emu up --dry-run`).

The configuration comes from the same functions the controller uses (nginxconf.servers over the served Ingresses
with the controller's upstream resolver, nginxconf.render); the record's directory is `$EMU_STATE/<cluster>/ingress`
(so the checksum on nginx.conf's first line is that of this text, not of the file `up` writes).  Differences,
because they need files or openssl: the default certificate and self-signed Secrets' certificates are made with
openssl by `up` (`generated` lists them; their text is not printed), and a Secret's certificate is taken as
covering its hosts with a matching key (`up` checks both and falls back to the default certificate, with a warning).
"""
from __future__ import annotations

import json
from typing import Any

from emu.addons.ingress import nginxconf
from emu.addons.ingress.routing import (choose_secret, controller_pod, external_names, hosts_text, resolver,
                                        self_signed_hosts, served)
from emu.addons.ingress.model import Ingress, Secret
from emu.model import names
from emu.plan.content import ETC_NETNS, Daemon, File, PlanObject, record_path


def _dir(cl: Any) -> str:
    return record_path(cl.name, "ingress")


def _cert_base(cl: Any, s: Secret) -> str:
    return f"{_dir(cl)}/certs/{s.namespace}-{s.name}"


def _cert_resolver(cl: Any, used: dict[str, Secret]) -> nginxconf.CertResolver:
    secrets = {s.key: s for s in cl.topology.secrets}
    self_signed = self_signed_hosts(cl)

    def cert_for(ing: Ingress, host: str) -> tuple[nginxconf.Certificate | None, str | None]:
        s, warning = choose_secret(ing, host, secrets, self_signed)
        if s is None:
            return None, warning
        used[s.key] = s
        base = _cert_base(cl, s)
        return nginxconf.Certificate(base + ".crt", base + ".key", s.key), None

    return cert_for


def default_certificate(cl: Any) -> nginxconf.Certificate:
    d = f"{_dir(cl)}/certs"
    return nginxconf.Certificate(f"{d}/default-fake-certificate.pem", f"{d}/default.key", "")


def generated(cl: Any) -> list[str]:
    """The certificate files `up` makes with openssl (their text depends on a fresh key): the default certificate
    and every self-signed Secret's."""
    if controller_pod(cl) is None:
        return []
    d = default_certificate(cl)
    return [d.cert, d.key] + [f"{_cert_base(cl, s)}.{ext}" for s in cl.topology.secrets
                              if s.self_signed and self_signed_hosts(cl).get(s.key) for ext in ("crt", "key")]


def desired(cl: Any) -> tuple[PlanObject, ...]:
    """With a controller pod (an Ingress in the cluster): the files the controller writes, then nginx; else ()."""
    key = controller_pod(cl)
    if key is None:
        return ()
    d = _dir(cl)
    used: dict[str, Secret] = {}
    cfg = nginxconf.servers(served(cl), resolver(cl), _cert_resolver(cl, used))
    text = nginxconf.render(cfg, d, default_certificate(cl))
    out: list[PlanObject] = []
    for s in used.values():  # a Secret's own PEMs, as written in the manifest (self-signed ones: see `generated`)
        if s.cert_pem is not None and s.key_pem is not None:
            out += [File(_cert_base(cl, s) + ".key", "ingress-nginx", s.key_pem, 0o600),
                    File(_cert_base(cl, s) + ".crt", "ingress-nginx", s.cert_pem)]
    out += [File(f"{d}/nginx.conf", "ingress-nginx", text, 0o600),
            File(f"{d}/warnings.json", "ingress-nginx", json.dumps(list(cfg.warnings))),
            File(f"{ETC_NETNS}/{names.external_netns(cl.name)}/hosts", "ingress-nginx",
                 hosts_text(external_names(cl)))]
    netns = cl.plan.pod(key).netns.name
    out.append(Daemon("ingress-nginx", key, netns, ("nginx", "-p", d, "-e", f"{d}/error.log", "-c",
                                                    f"{d}/nginx.conf", "-g", "daemon off; master_process on;")))
    return tuple(out)
