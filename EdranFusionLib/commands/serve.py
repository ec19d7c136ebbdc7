"""`serve` sub-command: the web page and API for fusing on this machine from a browser (see docs/WEB.md)."""

from __future__ import annotations

import argparse

from ..errors import EdranFusionError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s, this machine only; any other needs a token)")
    parser.add_argument("--port", type=int, default=8765, help="port (default: %(default)s; 0 picks a free one)")
    parser.add_argument("--data", default=None, help="folder whose volumes the page may open (nothing outside it)")
    parser.add_argument("--token", default=None,
                        help="access token every request must carry (default: generated when --host is not loopback)")
    parser.add_argument("--max-upload-mb", type=int, default=1024,
                        help="largest upload accepted (default: %(default)s)")
    parser.add_argument("--expiry-minutes", type=float, default=60.0,
                        help="finished jobs not downloaded are removed after this long (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    try:
        from ..web.server import serve
    except ImportError as error:
        raise EdranFusionError(
            f"the web server needs the 'web' extra ({error.name} is missing); pip install \"EdranFusionLib[web]\""
        ) from error
    serve(args.host, args.port, data=args.data, token=args.token, max_upload_mb=args.max_upload_mb,
          expiry_s=args.expiry_minutes * 60)
    return 0
