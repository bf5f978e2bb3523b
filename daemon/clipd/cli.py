"""The `clipd` command: serve, check-config, index, install-service, uninstall-service."""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from clipd import autostart, clipd_version
from clipd.config import Config, load_config
from clipd.errors import AlreadyRunning, ClipdError, ConfigError
from clipd_api.paths import CONFIG_ENV, default_config_path

log = logging.getLogger("clipd")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_ALREADY_RUNNING = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `clipd ... | head`


# glibc's mallopt parameter number for the arena limit (malloc.h).
_M_ARENA_MAX = -8


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = None
        if args.require_roots is not None:  # None: a command that reads no config
            config = load_config(args.config, require_roots=args.require_roots)
        _setup_logging(args.log_level or (config.log_level if config else "info"))
        code = int(args.command(config, args))
        sys.stdout.flush()  # a reader that went away shows here, not in Python's exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except ConfigError as exc:
        print(f"clipd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except AlreadyRunning as exc:
        print(f"clipd: {exc}", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    except ClipdError as exc:
        print(f"clipd: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipd",
        description="Local semantic image search daemon: indexes image folders with OpenCLIP.",
        epilog="exit codes: 0 ok, 1 runtime error, 2 bad config or usage, "
        "3 another clipd owns the database or socket, 130 interrupted",
    )
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
    manager = argparse.ArgumentParser(add_help=False)
    manager.add_argument(
        "--dry-run", action="store_true", help="print the files and commands; change nothing"
    )
    # Which service manager to write for; tests use it to exercise launchd on Linux.
    manager.add_argument(
        "--platform", choices=autostart.PLATFORMS, default=sys.platform, help=argparse.SUPPRESS
    )
    install = commands.add_parser(
        "install-service",
        parents=[common, manager],
        help="run clipd at login: write the systemd user unit or launchd agent, enable, start",
    )
    install.set_defaults(command=_install_service, require_roots=False)
    uninstall = commands.add_parser(
        "uninstall-service",
        parents=[common, manager],
        help="stop the service and remove its unit or agent (the index is kept)",
    )
    uninstall.set_defaults(command=_uninstall_service, require_roots=None)
    migrate = commands.add_parser(
        "migrate-store",
        help="move an index between SQLite and PostgreSQL without re-embedding",
        description="Copy one machine's index (files, vectors, capture times, pixel "
        "signatures, RAW pairings, failures, thumbnails, model) from FROM to TO, each a SQLite "
        "file or a postgresql:// URL. Stop the daemons using either first. FROM is left as it is.",
    )
    migrate.add_argument("source", metavar="FROM", help="the index to copy")
    migrate.add_argument("target", metavar="TO", help="where to copy it")
    migrate.add_argument(
        "--host",
        help="the machine whose index moves: its rows in a PostgreSQL FROM, its name in a "
        "PostgreSQL TO (default: this machine's name, as the config's `host` defaults)",
    )
    migrate.add_argument(
        "--replace",
        action="store_true",
        help="overwrite an index of the same host already in TO (refused without it)",
    )
    migrate.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="default: info"
    )
    migrate.set_defaults(command=_migrate_store, require_roots=None)
    return parser


def _setup_logging(level: str) -> None:
    # Under systemd, journald stamps every line itself; don't print a second timestamp.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if "JOURNAL_STREAM" not in os.environ:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)
    if level != "debug":
        for handler in logging.getLogger().handlers:
            handler.addFilter(_no_library_chatter)
    # Pillow warns about damaged metadata (e.g. corrupt EXIF) and still decodes: log, don't print.
    logging.captureWarnings(True)


def _no_library_chatter(record: logging.LogRecord) -> bool:
    """Other libraries' INFO lines are chatter (open_clip announces each step of a load, a dozen
    lines): below debug, only clipd's own INFO lines and everyone's warnings are shown."""
    return record.levelno >= logging.WARNING or record.name.partition(".")[0] == "clipd"


def _serve(config: Config, args: argparse.Namespace) -> int:
    _limit_malloc_arenas()
    from clipd.app import Daemon

    daemon = Daemon(config)
    # TERM and INT stop, HUP reloads the config.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, daemon.on_signal)
    # Over a file size limit (ulimit -f) a write then fails with EFBIG, which the store reports
    # and retries, instead of the signal killing the daemon mid-transaction.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    daemon.run()
    return EXIT_INTERRUPTED if daemon.stopped_by == signal.SIGINT else EXIT_OK


def _limit_malloc_arenas() -> None:
    """Two malloc arenas instead of one per thread (glibc only; elsewhere nothing happens).

    The loader and RPC threads each grew an arena that kept freed decode buffers: measured
    with ViT-B-32 while indexing phone photos, RSS went from 1540 to 1410 MiB (`clipd serve`)
    and peak RSS from 1531 to 1483 MiB (`clipd index`, 80 photos), at no cost in throughput.
    Done before torch starts its threads; MALLOC_ARENA_MAX, when set, wins.
    """
    if sys.platform != "linux" or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl and other C libraries: no arenas to limit
        return
    libc.mallopt(_M_ARENA_MAX, 2)


def _silence_stdout() -> None:
    # The reader is gone. Python flushes stdout once more at exit, which would fail again and
    # print a warning; pointing the descriptor at /dev/null makes that flush harmless.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _check_config(config: Config, args: argparse.Namespace) -> int:
    from clipd.embedder import check_model

    print(f"config:             {config.source}")
    for key, value in _settings(config):
        print(f"{key + ':':<19} {value}")
    sys.stdout.flush()  # the values first: the model check below takes seconds
    check_model(config.model)
    print("config OK")
    return EXIT_OK


def _settings(config: Config) -> list[tuple[str, str]]:
    """(key, value shown) for every setting, walked from the dataclass so none is left out."""
    polled = set(config.poll_roots)
    shown = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name in ("source", "poll_roots"):
            continue
        if field.name == "roots":
            text = ", ".join(f"{root} (polled)" if root in polled else str(root) for root in value)
        elif field.name == "model":
            text = (
                f"{value.name} / {value.pretrained} (device {value.device}, precision "
                f"{value.precision}, runtime {value.runtime})"
            )
        elif isinstance(value, tuple):
            text = " ".join(map(str, value)) or "(none)"
        elif value is None:
            text = "(off)"
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
        shown.append((field.name, text))
    return shown


def _index(config: Config, args: argparse.Namespace) -> int:
    _limit_malloc_arenas()
    from clipd.image_model import for_indexing
    from clipd.indexer import Indexer
    from clipd.instance import file_lock
    from clipd.progress import Progress
    from clipd.scanner import outside_roots
    from clipd.storage import store_for

    paths = [path.expanduser().resolve() for path in args.paths]
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise ClipdError(f"no such file or directory: {', '.join(missing)}")
    outside = outside_roots(paths, config.roots)
    if outside:
        raise ConfigError(
            f"{outside[0]} is below none of the roots in {config.source} "
            f"({', '.join(map(str, config.roots))}); only files below a root are indexed, "
            "since only they are kept current: add its folder to `roots` to index it"
        )
    started = time.monotonic()
    lock = file_lock(config.database, "index")
    if lock is not None:
        lock.acquire()
    try:
        store = store_for(config)
        try:
            embedder = for_indexing(config.model)
            loaded = time.monotonic()
            store.bind_model(embedder.identity)
            job = Indexer(config, store, embedder, Progress()).run_once(paths)
        finally:
            store.close()
    finally:
        if lock is not None:
            lock.release()
    # The rate is the indexing's own: the model's load (seconds, once) is reported apart.
    indexing = time.monotonic() - loaded
    rate = job.indexed / indexing if indexing > 0 else 0.0
    print(
        f"indexed {job.indexed}, failed {job.failed}, removed {job.removed} "
        f"in {indexing:.1f} s ({rate:.1f} images/s) into {config.database}; "
        f"the model loaded in {loaded - started:.1f} s"
    )
    return EXIT_ERROR if job.failed and not job.indexed else EXIT_OK


def _migrate_store(config: Config | None, args: argparse.Namespace) -> int:
    from clipd.config import default_host, parse_database
    from clipd.migrate import migrate_store

    started = time.monotonic()
    moved = migrate_store(
        parse_database(args.source),
        parse_database(args.target),
        host=args.host or default_host(),
        replace=args.replace,
    )
    print(
        f"moved {moved.files} files ({moved.offline} offline), {moved.failures} failures, "
        f"{moved.pairs} RAW pairings and {moved.thumbnails} thumbnails of the model "
        f"{moved.model.name} / {moved.model.pretrained} in {time.monotonic() - started:.1f} s; "
        "nothing was embedded again"
    )
    return EXIT_OK


def _install_service(config: Config, args: argparse.Namespace) -> int:

    assert config.source is not None  # loaded from a file
    plan = autostart.plan_install(args.platform, config.source, autostart.clipd_executable())
    autostart.execute(plan, sys.stdout, dry_run=args.dry_run)
    return EXIT_OK


def _uninstall_service(config: None, args: argparse.Namespace) -> int:
    autostart.execute(autostart.plan_uninstall(args.platform), sys.stdout, dry_run=args.dry_run)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
