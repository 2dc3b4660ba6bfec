"""``traffic pki ...``: create the field link's certificates, plan-signing key and broker files.

Added to the console script by :func:`add_commands` (one line in
``app.cli.build_parser``), so this package owns its own subcommands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from traffic.config import load_settings
from traffic.errors import ConfigError, InputError

__all__ = ["add_commands"]


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot become the PKI folder before any key is generated.

    ``init_pki`` would fail halfway with ``FileExistsError`` when ``out`` (or a
    parent) is a file; checking first gives the user one line naming the path.
    """
    for place in (out, *out.parents):
        if place.exists():
            if not place.is_dir():
                what = "--out" if place == out else f"--out {out}: its parent"
                raise InputError(f"{what} {place} is a file, not a folder")
            break


def _cmd_pki_init(args: argparse.Namespace) -> int:
    from traffic.security.pki import CENTRAL, ingest_identities, init_pki

    controllers = _split(args.controllers)
    if not controllers:
        raise ConfigError("--controllers: name at least one controller id, comma separated")
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port: {args.port} is not a TCP port (1-65535)")
    if args.ingest_workers is not None and not 1 <= args.ingest_workers <= 64:
        raise ConfigError(f"--ingest-workers: 1..64, got {args.ingest_workers}")
    _check_out(args.out)
    site = args.site or load_settings(args.config).site.site
    try:
        layout = init_pki(args.out, controllers=controllers, site=site, gateways=_split(args.gateways),
                          server_dns=_split(args.server_names),
                          server_ips=_split(args.server_ips), port=args.port,
                          ingest_workers=args.ingest_workers)
    except OSError as exc:  # a parent that is a file, a read-only or full disk: name the place, no traceback
        where = exc.filename or args.out
        raise InputError(f"--out {args.out}: cannot write {where}: {exc.strerror or exc}") from exc
    out = sys.stdout
    out.write(f"PKI for site {site!r} in {layout.root}\n")
    out.write(f"  CA certificate     {layout.ca_cert}\n")
    out.write(f"  broker             {layout.server_cert} (+ .key)\n")
    from traffic.security.pki import load_manifest

    workers = ingest_identities(int(load_manifest(layout.root).get("ingest_workers", 1)))
    for identity in [*workers, CENTRAL, *controllers, *_split(args.gateways)]:
        out.write(f"  client {identity:<12}{layout.client_cert(identity)} (+ .key)\n")
    out.write(f"  plan signing key   {layout.signing_key} (centre only)\n")
    out.write(f"  plan verify key    {layout.verify_key} (every controller)\n")
    out.write(f"  broker config      {layout.mosquitto_conf}\n  ACL                {layout.acl_file}\n")
    out.write(f"  revocation list    {layout.crl}\n")
    return 0


def _cmd_pki_revoke(args: argparse.Namespace) -> int:
    from traffic.security.pki import PkiLayout, revoke

    if (args.controller is None) == (args.cert is None):
        raise InputError("name exactly one of --controller ID or --cert PATH")
    layout = PkiLayout(args.out)
    if not layout.manifest.exists():
        raise InputError(f"--out {args.out}: no PKI there (run 'traffic pki init' first)")
    entry = revoke(args.out, identity=args.controller, cert_path=args.cert)
    sys.stdout.write(f"revoked {entry['identity']} (serial {int(entry['serial']):x}) in {layout.crl}\n"
                     "restart the broker to apply (Mosquitto reads crlfile at start)\n")
    return 0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``traffic pki init`` and ``traffic pki revoke`` on the console script's subcommand parser."""
    pki = subparsers.add_parser("pki", help="certificates, plan-signing key, Mosquitto TLS config and ACL")
    pki_sub = pki.add_subparsers(dest="pki_command", required=True)
    init = pki_sub.add_parser("init", help="create (or extend) a CA, broker/client certificates, signing key, ACL")
    init.add_argument("--out", type=Path, required=True, help="PKI folder (kept and extended if it exists)")
    init.add_argument("--controllers", required=True, help="controller ids, comma separated (e.g. j1,j2,j3)")
    init.add_argument("--gateways", default="",
                      help="field gateway ids (one connection for many emulated controllers), comma separated")
    init.add_argument("--site", default=None, help="MQTT site level (default: [site] site of the configuration)")
    init.add_argument("--port", type=int, default=8883, help="TLS listener port in mosquitto.conf")
    init.add_argument("--server-names", default="localhost", help="broker DNS names, comma separated")
    init.add_argument("--server-ips", default="127.0.0.1", help="broker IP addresses, comma separated")
    init.add_argument("--ingest-workers", type=int, default=None,
                      help="ingest workers, each with its own certificate: ingest, ingest-2, ... (default: 1, "
                           "or what the folder has)")
    init.set_defaults(func=_cmd_pki_init)
    rev = pki_sub.add_parser("revoke", help="revoke a controller's (or any client's) certificate: crl.pem + ACL")
    rev.add_argument("--out", type=Path, required=True, help="PKI folder made by 'traffic pki init'")
    what = rev.add_mutually_exclusive_group(required=True)
    what.add_argument("--controller", default=None, help="identity whose current certificate to revoke")
    what.add_argument("--cert", type=Path, default=None, help="certificate file to revoke (PEM)")
    rev.set_defaults(func=_cmd_pki_revoke)
