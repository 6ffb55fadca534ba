"""`emu create secret tls`: a kubernetes.io/tls Secret manifest, as `kubectl create secret tls --dry-run=client
-o yaml` prints it, from PEM files or self-signed for the given hosts."""
from __future__ import annotations

import click
import yaml

from emu.cli.errors import run as _run
from emu.addons.ingress import certs

LAYER = "cli"


@click.group()
def create() -> None:
    """Print manifests for objects emu can make (like kubectl create --dry-run=client -o yaml)."""


@create.group()
def secret() -> None:
    """Secrets."""


@secret.command("tls")
@click.argument("name")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--cert", "cert_file", type=click.Path(exists=True, dir_okay=False), help="PEM certificate file.")
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False), help="PEM private key file.")
@click.option("--self-signed", is_flag=True, help="Make a self-signed certificate (openssl) for --host names.")
@click.option("--host", "hosts", multiple=True, metavar="NAME", help="Host name for --self-signed (repeatable).")
def tls(name: str, namespace: str, cert_file: str | None, key_file: str | None, self_signed: bool,
        hosts: tuple[str, ...]) -> None:
    """Print a kubernetes.io/tls Secret NAME; `emu apply -f` it, or name it in an Ingress's spec.tls."""
    if self_signed == bool(cert_file or key_file):
        raise click.UsageError("give either --self-signed with --host NAME, or --cert FILE and --key FILE")
    if self_signed:
        if not hosts:
            raise click.UsageError("--self-signed needs at least one --host NAME")
        crt, key = _run(lambda: certs.self_signed(list(hosts)))
    else:
        if not (cert_file and key_file):
            raise click.UsageError("--cert and --key go together")
        with open(cert_file) as f1, open(key_file) as f2:
            crt, key = f1.read(), f2.read()
        if not _run(lambda: certs.key_matches(crt, key)):
            raise click.ClickException(f"{key_file}: the private key does not match the certificate in {cert_file}")
    click.echo(yaml.safe_dump(certs.secret_manifest(namespace, name, crt, key), sort_keys=False), nl=False)
