"""``traffic pki ...``: create the field link's certificates, plan-signing key and broker files.

Added to the console script by :func:`add_commands` (one line in
``traffic.cli.build_parser``), so this package owns its own subcommands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from traffic.config import load_settings
from traffic.errors import ConfigError

__all__ = ["add_commands"]


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _cmd_pki_init(args: argparse.Namespace) -> int:
    from traffic.security.pki import SERVICES, init_pki

    controllers = _split(args.controllers)
    if not controllers:
        raise ConfigError("--controllers: name at least one controller id, comma separated")
    site = args.site or load_settings(args.config).site.site
    layout = init_pki(args.out, controllers=controllers, site=site, gateways=_split(args.gateways),
                      server_dns=_split(args.server_names),
                      server_ips=_split(args.server_ips), port=args.port)
    out = sys.stdout
    out.write(f"PKI for site {site!r} in {layout.root}\n")
    out.write(f"  CA certificate     {layout.ca_cert}\n")
    out.write(f"  broker             {layout.server_cert} (+ .key)\n")
    for identity in [*SERVICES, *controllers, *_split(args.gateways)]:
        out.write(f"  client {identity:<12}{layout.client_cert(identity)} (+ .key)\n")
    out.write(f"  plan signing key   {layout.signing_key} (centre only)\n")
    out.write(f"  plan verify key    {layout.verify_key} (every controller)\n")
    out.write(f"  broker config      {layout.mosquitto_conf}\n  ACL                {layout.acl_file}\n")
    return 0


def add_commands(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``traffic pki init`` on the console script's subcommand parser."""
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
    init.set_defaults(func=_cmd_pki_init)
