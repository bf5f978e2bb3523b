"""The `clipd` command: serve, check-config, index."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from clipd.config import CONFIG_ENV, Config, default_config_path, load_config
from clipd.errors import ClipdError, ConfigError

log = logging.getLogger("clipd")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config, require_roots=args.require_roots)
        _setup_logging(args.log_level or config.log_level)
        return int(args.command(config, args))
    except ConfigError as exc:
        print(f"clipd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ClipdError as exc:
        print(f"clipd: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipd",
        description="Local semantic image search daemon: indexes image folders with OpenCLIP.",
        epilog="exit codes: 0 ok, 1 runtime error, 2 bad config or usage, 130 interrupted",
    )
    from clipd.app import clipd_version

    parser.add_argument("--version", action="version", version=f"clipd {clipd_version()}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        help=f"config file (default: ${CONFIG_ENV}, else {default_config_path()})",
    )
    common.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="overrides log_level"
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", parents=[common], help="run the daemon in the foreground (Ctrl-C stops it)"
    )
    # A missing root may be an unmounted disk: the daemon waits for it rather than refusing.
    serve.set_defaults(command=_serve, require_roots=False)
    check = commands.add_parser(
        "check-config", parents=[common], help="validate the config and print it; starts nothing"
    )
    check.set_defaults(command=_check_config, require_roots=True)
    index = commands.add_parser(
        "index",
        parents=[common],
        help="index files or folders once, without a server, then exit",
    )
    index.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    index.set_defaults(command=_index, require_roots=False)
    return parser


def _setup_logging(level: str) -> None:
    # Under systemd, journald stamps every line itself; don't print a second timestamp.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if "JOURNAL_STREAM" not in os.environ:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)
    # Pillow warns about damaged metadata (e.g. corrupt EXIF) and still decodes: log, don't print.
    logging.captureWarnings(True)


def _serve(config: Config, args: argparse.Namespace) -> int:
    from clipd.app import Daemon

    daemon = Daemon(config)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Over a file size limit (ulimit -f) a write then fails with EFBIG, which the store reports
    # and retries, instead of the signal killing the daemon mid-transaction.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    daemon.run()
    return EXIT_OK


def _check_config(config: Config, args: argparse.Namespace) -> int:
    model = config.model
    lines = [
        f"config:      {config.source}",
        f"roots:       {', '.join(map(str, config.roots))}",
        f"database:    {config.database}",
        f"socket:      {config.socket}",
        f"model:       {model.name} / {model.pretrained} ({model.device}, {model.precision})",
        f"batch_size:  {config.batch_size}",
        f"include:     {' '.join(config.include)}",
        f"exclude:     {' '.join(config.exclude) or '(none)'}",
    ]
    print("\n".join(lines))
    print("config OK")
    return EXIT_OK


def _index(config: Config, args: argparse.Namespace) -> int:
    from clipd.embedder import Embedder
    from clipd.indexer import Indexer
    from clipd.progress import Progress
    from clipd.store import Store

    paths = [path.expanduser().resolve() for path in args.paths]
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise ClipdError(f"no such file or directory: {', '.join(missing)}")
    started = time.monotonic()
    store = Store(config.database)
    try:
        embedder = Embedder(config.model)
        store.bind_model(embedder.identity)
        job = Indexer(config, store, embedder, Progress()).run_once(paths)
    finally:
        store.close()
    elapsed = time.monotonic() - started
    rate = job.indexed / elapsed if elapsed > 0 else 0.0
    print(
        f"indexed {job.indexed}, failed {job.failed}, removed {job.removed} "
        f"in {elapsed:.1f} s ({rate:.1f} images/s) into {config.database}"
    )
    return EXIT_ERROR if job.failed and not job.indexed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
