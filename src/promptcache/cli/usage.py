"""`promptcache usage`: the usage ledger's report on the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from promptcache.cli.settings import add_config_file_flag, build_config
from promptcache.config import ServerConfig, default_data_dir
from promptcache.ledger.report import GROUPS, UsageQuery, parse_time, table, total, usage
from promptcache.ledger.store import LEDGER_FILE


def add_usage_parser(sub: Any) -> None:
    p = sub.add_parser("usage", help="requests, tokens, hit rate and cost from the usage ledger")
    p.add_argument("--since", default=None, help="from this UTC date/time (or unix seconds)")
    p.add_argument("--until", default=None, help="before this UTC date/time (or unix seconds)")
    p.add_argument("--tenant", default=None, help="only this tenant")
    p.add_argument("--model", default=None, help="only this served model")
    p.add_argument("--by", default="day", choices=sorted(GROUPS), help="group rows; default: day")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--data-dir", dest="data_dir", default=None, help="the server's data dir (its ledger)"
    )
    add_config_file_flag(p)


def run_usage_command(args: argparse.Namespace) -> int:
    server = build_config(ServerConfig, args, "server")
    data_dir = Path(server.data_dir) if server.data_dir else default_data_dir()
    query = UsageQuery(
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
        tenant=args.tenant,
        model=args.model,
        by=args.by,
    )
    groups = usage(data_dir / LEDGER_FILE, query)
    if args.json:
        body = {"by": args.by, "data": [g.to_dict() for g in groups]}
        print(json.dumps({**body, "total": total(groups).to_dict()}, indent=1))
    else:
        sys.stdout.write(table(groups, args.by))
    return 0
