"""`emu probe FROM http(s)://HOST[:PORT]/PATH`: a real HTTP/1.1 request (TLS with SNI for https) sent from FROM's
namespace, as curl would send it.  An Ingress host resolves to the ingress controller's address (the LoadBalancer
IP, or the first node on the Service's node port), as the external host's /etc/hosts names it; an IP literal is
used as written.  The answer shows the status, the certificate and where it came from, and what the backend pod saw
(the URI after any rewrite, the X-Forwarded-* headers nginx added); nginx's access.log line for the request names
the upstream and the endpoint it picked."""
from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

from emu.apply import netns
from emu.errors import EmuError
from emu.addons.ingress import certs, routing

LAYER = "observe"

MAX_RESPONSE = 1 << 20


class URLError(EmuError):
    exit_code = 2


def _target(cl: Any, url: str) -> dict[str, Any]:
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise URLError(f"{url}: expected http://HOST[:PORT]/PATH or https://...")
    host = u.hostname
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    try:
        ipaddress.IPv4Address(host)
        return {"scheme": u.scheme, "host": host, "ip": host, "port": u.port or (443 if u.scheme == "https" else 80),
                "path": path, "via": "address"}
    except ValueError:
        pass
    a = routing.address(cl)
    names = routing.external_names(cl)
    if host not in names or a is None:
        known = ", ".join(sorted(names)) or "none"
        raise URLError(f"{url}: {host} is not an Ingress host of cluster {cl.name} (Ingress hosts: {known}); "
                       "use an IP address for anything else")
    port = u.port or (a.https if u.scheme == "https" else a.http)
    return {"scheme": u.scheme, "host": host, "ip": a.ip, "port": port, "path": path,
            "via": f"{a.via} ingress-nginx/ingress-nginx-controller"}


def _parse(raw: bytes) -> dict[str, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        return {"status": None, "reason": f"not an HTTP response: {lines[0][:60]!r}", "headers": {}, "body": ""}
    headers = {}
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if sep:
            headers[k.strip().lower()] = v.strip()
    return {"status": int(parts[1]), "reason": parts[2] if len(parts) > 2 else "", "headers": headers,
            "body": body.decode(errors="replace")}


def _cert_source(cl: Any, host: str, pem: str) -> str:
    """Which Secret the presented certificate came from (compared with the files the controller serves)."""
    d = os.path.join(cl.record.dir, "ingress", "certs")
    try:
        files = sorted(f for f in os.listdir(d) if f.endswith((".crt", ".pem")))
    except OSError:
        return "unknown"
    for f in files:
        with open(os.path.join(d, f)) as fh:
            if fh.read().strip() == pem.strip():
                if f.startswith("default-fake"):
                    return "the controller's default (fake) certificate"
                ns, name = next(((s.namespace, s.name) for s in cl.topology.secrets
                                 if f == f"{s.namespace}-{s.name}.crt"), ("?", f))
                return f"Secret {ns}/{name}"
    return "unknown"


def _access_log(cl: Any, req_id: str | None) -> str | None:
    if not req_id:
        return None
    try:
        with open(os.path.join(cl.record.dir, "ingress", "access.log")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    return next((line for line in reversed(lines) if line.endswith(req_id)), None)


def probe_url(cl: Any, src_text: str, url: str, timeout: float = 2.0) -> dict[str, Any]:
    """GET `url` from FROM (a pod, node/NAME, external or external@IP)."""
    from emu.observe.probing import _source

    src = _source(cl, src_text)
    assert src.netns is not None
    t = _target(cl, url)
    res: dict[str, Any] = {"from": src.label, "url": url, "resolved": {"ip": t["ip"], "port": t["port"],
                                                                      "via": t["via"]}, "ok": False}
    host_header = t["host"] if t["port"] in (80, 443) else f"{t['host']}:{t['port']}"
    request = (f"GET {t['path']} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: emu-probe\r\nAccept: */*\r\n"
               "Connection: close\r\n\r\n").encode()
    t0 = time.monotonic()
    s = netns.socket_in(src.netns, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if src.bind:
            s.bind((src.bind, 0))
        s.connect((t["ip"], t["port"]))
        if t["scheme"] == "https":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # checked below, against the host and the Secret it should come from
            ctx.set_alpn_protocols(["http/1.1"])
            sni = None if t["via"] == "address" and t["host"] == t["ip"] else t["host"]
            s = ctx.wrap_socket(s, server_hostname=sni)
            der = s.getpeercert(binary_form=True)
            pem = ssl.DER_cert_to_PEM_cert(der) if der else ""
            info = certs.info(pem) if pem else None
            res["tls"] = {"version": s.version(), "cipher": (s.cipher() or ("",))[0], "sni": sni,
                          "subject": info.subject if info else None, "issuer": info.issuer if info else None,
                          "names": list(info.names) if info else [], "not_after": info.not_after if info else None,
                          "host_matches": bool(info and routing.host_matches(t["host"], info.names)),
                          "source": _cert_source(cl, t["host"], pem)}
        s.sendall(request)
        chunks, size = [], 0
        while size < MAX_RESPONSE:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (OSError, ssl.SSLError) as e:
        res["error"] = f"{type(e).__name__}: {e}"
        res["time_ms"] = round((time.monotonic() - t0) * 1000, 2)
        return res
    finally:
        s.close()
    res["time_ms"] = round((time.monotonic() - t0) * 1000, 2)
    r = _parse(b"".join(chunks))
    res.update(status=r["status"], reason=r["reason"], headers=r["headers"])
    res["ok"] = r["status"] is not None and 200 <= r["status"] < 400
    try:
        obj = json.loads(r["body"])
    except ValueError:
        obj = None
    if isinstance(obj, dict) and "owner" in obj:
        req = obj.get("request") or {}
        hdrs = req.get("headers") or {}
        res["backend"] = {"pod": obj["owner"], "node": obj.get("node"), "ip": obj.get("ip"),
                          "port": obj.get("port"), "uri": req.get("uri"), "host": hdrs.get("host"),
                          "client_ip": obj.get("client_ip"), "x_forwarded_for": hdrs.get("x-forwarded-for"),
                          "x_forwarded_proto": hdrs.get("x-forwarded-proto")}
        line = _access_log(cl, hdrs.get("x-request-id"))
        if line:
            res["access_log"] = line
    else:
        res["body"] = r["body"][:2000]
    return res


def probe_url_text(res: dict[str, Any]) -> str:
    r = res["resolved"]
    out = [f"{res['from']} -> {res['url']}  ({r['ip']}:{r['port']}, {r['via']})"]
    tls = res.get("tls")
    if tls:
        out.append(f"  TLS      {tls['version']} {tls['cipher']}, SNI {tls['sni'] or '-'}")
        out.append(f"  cert     {tls['subject']} (issuer {tls['issuer']}), names {', '.join(tls['names']) or '-'}, "
                   f"until {tls['not_after']}")
        out.append(f"           from {tls['source']}; "
                   f"{'valid for' if tls['host_matches'] else 'NOT valid for'} the host")
    if res.get("error"):
        out.append(f"  FAILED   {res['error']} after {res['time_ms']} ms")
        return "\n".join(out)
    out.append(f"  HTTP     {res['status']} {res['reason']} in {res['time_ms']} ms")
    if res.get("headers", {}).get("location"):
        out.append(f"  Location {res['headers']['location']}")
    b = res.get("backend")
    if b:
        out.append(f"  backend  {b['pod']} ({b['node']}, {b['ip']}:{b['port']}) saw GET {b['uri']} "
                   f"Host {b['host']}, X-Forwarded-For {b['x_forwarded_for']}, "
                   f"X-Forwarded-Proto {b['x_forwarded_proto']}")
    elif res.get("body"):
        first = next((ln.strip() for ln in res["body"].splitlines() if "<title>" in ln), res["body"][:80].strip())
        out.append(f"  body     {first}")
    if res.get("access_log"):
        out.append(f"  nginx    {res['access_log']}")
    return "\n".join(out)
