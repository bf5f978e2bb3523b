"""Load and validate the YAML configuration into typed, frozen objects.

Every error is one line naming the file, the key and the fix. Relative paths in the file are
relative to the file's directory; `~` and `$VARS` are expanded in every path.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

import yaml

from clipd.errors import ConfigError
from clipd.pgurl import PostgresDatabase, is_postgres_url
from clipd_api.paths import (
    CONFIG_ENV,
    SOCKET_ENV,
    TOKEN_FILE_ENV,
    default_config_path,
    default_socket_path,
    user_token_path,
)

DATABASE_ENV = "CLIPD_DATABASE"

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# What runs the image tower (clipd.onnx_images, clipd.image_model); texts always run in torch.
RUNTIMES = ("auto", "torch", "onnx")
# Which file of a RAW + JPEG pair is indexed (see clipd.pairs, which these name).
RAW_PAIRS = ("prefer_jpeg", "prefer_raw", "both")
# Weights named like this mean "random initialisation": for benchmarks, never for real use.
RANDOM_WEIGHTS = "random"

# The cap guards against decompression bombs, not against big photos: the largest single-shot
# camera sensors give ~151 Mpx (Phase One IQ4), 100 Mpx bodies are common among enthusiasts, and
# all of them must index. It equals Pillow's own hard limit (2 * its default MAX_IMAGE_PIXELS),
# which its TIFF and GIF loaders enforce internally whatever we pass, so no image passes this
# check only to be refused by Pillow later. At the cap one full-size copy takes 0.5 GB (RGB) to
# 0.7 GB (RGBA), two briefly while converting; a JPEG with min_side decodes at 1/8 scale instead.
DEFAULT_MAX_PIXELS = 178_956_970

# What cameras and phones write, and the common web and editing formats. Files are identified by
# content, so a name only decides which files are looked at.
DEFAULT_INCLUDE = (
    "*.jpg",
    "*.jpeg",
    "*.jpe",
    "*.png",
    "*.webp",
    "*.gif",
    "*.bmp",
    "*.tif",
    "*.tiff",
    # HEIC/HEIF (iPhones; .hif: Canon, Sony, Fujifilm), AVIF, JPEG XL
    "*.heic",
    "*.heif",
    "*.hif",
    "*.avif",
    "*.jxl",
    # Camera RAW: Adobe DNG (and phones' ProRAW), Canon, Nikon, Sony, Fujifilm, Olympus/OM,
    # Panasonic/Leica, Pentax, Samsung, Hasselblad, Epson, Kodak.
    "*.dng",
    "*.cr2",
    "*.cr3",
    "*.nef",
    "*.nrw",
    "*.arw",
    "*.srf",
    "*.sr2",
    "*.raf",
    "*.orf",
    "*.rw2",
    "*.rwl",
    "*.pef",
    "*.srw",
    "*.3fr",
    "*.erf",
    "*.dcr",
    "*.kdc",
)


def default_database_path() -> Path:
    """$XDG_DATA_HOME/clipd/index.db."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "clipd" / "index.db"


def default_host() -> str:
    """This machine's name, as the OS knows it."""
    return socket.gethostname()


@dataclass(frozen=True, slots=True)
class TcpAddress:
    host: str
    port: int  # 0: any free port

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: it may resolve to anything
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ModelConfig:
    # An OpenCLIP model name, or the path of an OpenCLIP model-config JSON.
    name: str = "ViT-B-32"
    # A pretrained tag of that model, the path of a checkpoint file, or "random".
    pretrained: str = "laion2b_s34b_b79k"
    device: str = "auto"
    precision: str = "auto"
    runtime: str = "auto"


@dataclass(frozen=True, slots=True)
class Config:
    roots: tuple[Path, ...]
    # The roots to poll instead of watching natively (`poll: true` in their entry).
    poll_roots: tuple[Path, ...] = ()
    # A SQLite file, or a PostgreSQL database shared by several machines (clipd.pgstore).
    database: Path | PostgresDatabase = field(default_factory=default_database_path)
    # This machine's name in a shared store: it owns the rows it indexes, and changes no others.
    host: str = field(default_factory=default_host)
    socket: Path = field(default_factory=default_socket_path)
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 16
    # Loader threads that open, decode and resize images ahead of the model; 0 = automatic.
    loader_threads: int = 0
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = ()
    skip_hidden: bool = True
    follow_symlinks: bool = False
    # Watch the roots for changes (else: only the start-up and periodic scans see them).
    watch: bool = True
    # A changed file is embedded once its size and mtime held still this long.
    settle_seconds: float = 1.0
    # Seconds between scans of a polled root (and between checks for offline roots).
    poll_interval: float = 30.0
    # Seconds between full safety-net scans of every root; 0 turns them off.
    reconcile_interval: float = 4 * 3600.0
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    # A RAW beside a JPEG/HEIC of the same photo: which one is indexed (clipd.pairs).
    raw_pairs: str = "prefer_jpeg"
    log_level: str = "info"
    # Also serve gRPC on this TCP address (token required); None: the Unix socket only.
    tcp: TcpAddress | None = None
    token_file: Path = field(default_factory=user_token_path)
    # Serve the web app and the HTTP API here (loopback only; port 0: a free one); None: off.
    web: TcpAddress | None = field(default_factory=lambda: TcpAddress("127.0.0.1", 0))
    # Where the web app saves images people add (inside a root); None: adding is off.
    upload_dir: Path | None = None
    source: Path | None = None  # the file this came from, for messages

    @property
    def database_file(self) -> Path:
        """The SQLite file of the index, for what reads the file itself (tools, tests)."""
        if not isinstance(self.database, Path):
            raise ConfigError(f"database is {self.database}, not a SQLite file")
        return self.database


_LOG_LEVELS = ("debug", "info", "warning", "error")
# Defaults come from the dataclasses alone, so the file and the code cannot disagree.
_DEFAULTS = Config(roots=())


def load_config(path: Path | None = None, *, require_roots: bool = True) -> Config:
    """Read and validate the config file (default: default_config_path()).

    With require_roots=False a root that does not exist is accepted: the daemon treats it as
    offline (an unmounted disk) rather than refusing to start.
    """
    path = path or default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file; copy config.yaml from the clipd repository there, "
            f"or pass --config / set {CONFIG_ENV}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: {problem}; fix the YAML syntax") from exc
    return parse_config(data if data is not None else {}, path, require_roots=require_roots)


def parse_config(data: object, source: Path, *, require_roots: bool = True) -> Config:
    """Validate a decoded YAML document into a Config."""
    reader = _Reader(source)
    table = reader.mapping(data, "", allowed=_field_names(Config))
    model = reader.mapping(table.get("model", {}), "model", allowed=_field_names(ModelConfig))
    base = source.parent

    def key(name: str) -> Any:
        """The file's value for a top-level key, else the Config default."""
        return table.get(name, getattr(_DEFAULTS, name))

    def model_key(name: str) -> Any:
        return model.get(name, getattr(_DEFAULTS.model, name))

    roots = [
        reader.root(value, f"roots[{i}]", base, require_roots) for i, value in _roots(reader, table)
    ]
    config = Config(
        roots=tuple(path for path, _ in roots),
        poll_roots=tuple(path for path, poll in roots if poll),
        database=_env_database() or reader.database(table.get("database"), base),
        host=reader.host(key("host")),
        socket=_env_path(SOCKET_ENV)
        or reader.path(table.get("socket"), "socket", base)
        or default_socket_path(),
        model=ModelConfig(
            name=reader.model_ref(model_key("name"), "model.name", base, ".json"),
            pretrained=reader.model_ref(model_key("pretrained"), "model.pretrained", base, None),
            device=reader.choice(model_key("device"), "model.device", DEVICES),
            precision=reader.choice(model_key("precision"), "model.precision", PRECISIONS),
            runtime=reader.choice(model_key("runtime"), "model.runtime", RUNTIMES),
        ),
        batch_size=reader.integer(key("batch_size"), "batch_size", 1, 1024),
        loader_threads=reader.integer(key("loader_threads"), "loader_threads", 0, 64),
        include=reader.globs(key("include"), "include"),
        exclude=reader.globs(key("exclude"), "exclude"),
        skip_hidden=reader.boolean(key("skip_hidden"), "skip_hidden"),
        follow_symlinks=reader.boolean(key("follow_symlinks"), "follow_symlinks"),
        watch=reader.boolean(key("watch"), "watch"),
        settle_seconds=reader.number(key("settle_seconds"), "settle_seconds", 0, 600),
        poll_interval=reader.number(key("poll_interval"), "poll_interval", 0.1, 86400),
        reconcile_interval=reader.number(
            key("reconcile_interval"), "reconcile_interval", 0, 30 * 86400
        ),
        max_image_pixels=reader.integer(key("max_image_pixels"), "max_image_pixels", 1, 10**10),
        raw_pairs=reader.choice(key("raw_pairs"), "raw_pairs", RAW_PAIRS),
        log_level=reader.choice(key("log_level"), "log_level", _LOG_LEVELS),
        tcp=reader.tcp(table.get("tcp")),
        token_file=_env_path(TOKEN_FILE_ENV)
        or reader.path(table.get("token_file"), "token_file", base)
        or user_token_path(),
        web=reader.web(key("web")),
        upload_dir=reader.folder(table.get("upload_dir"), "upload_dir", base),
        source=source,
    )
    if config.upload_dir is not None and not any(
        config.upload_dir == root or config.upload_dir.is_relative_to(root) for root in config.roots
    ):
        reader.fail(
            "upload_dir",
            f"names {config.upload_dir}, which is not inside a root; the images added there "
            "must be indexed, so name a folder inside one of the roots",
        )
    chosen = config.model
    if chosen.runtime == "onnx" and (
        chosen.device not in ("auto", "cpu") or chosen.precision not in ("auto", "fp32")
    ):
        reader.fail(
            "model.runtime",
            "is onnx, which runs on the CPU in fp32 (or int8 under precision auto), but "
            f"model.device is {chosen.device} and model.precision {chosen.precision}: set them "
            "to cpu and fp32 (or auto), or model.runtime to auto",
        )
    if not config.include:
        raise ConfigError(f"{source}: key 'include' is empty; list at least one glob like '*.jpg'")
    return config


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.name not in ("source", "poll_roots"))


def parse_database(text: str) -> Path | PostgresDatabase:
    """A `database` given on a command line: a PostgreSQL URL, else a SQLite file's path."""
    text = text.strip()
    if is_postgres_url(text):
        return PostgresDatabase(text)
    return Path(os.path.expandvars(text)).expanduser().resolve()


def _env_database() -> Path | PostgresDatabase | None:
    """$CLIPD_DATABASE: a PostgreSQL URL or a file's path."""
    value = os.environ.get(DATABASE_ENV, "").strip()
    if is_postgres_url(value):
        return PostgresDatabase(value)
    return _env_path(DATABASE_ENV)


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(os.path.expandvars(value)).expanduser() if value else None


def _roots(reader: _Reader, table: Mapping[str, Any]) -> list[tuple[int, Any]]:
    roots = table.get("roots")
    if not isinstance(roots, list) or not roots:
        reader.fail("roots", "must be a non-empty list of folders to index, e.g. [~/Pictures]")
    return list(enumerate(roots))


class _Reader:
    """Typed accessors that raise one-line ConfigErrors naming the file and key."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ConfigError(f"{self.source}: key '{key}' {problem}")

    def mapping(self, value: object, key: str, *, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            what = f"key '{key}'" if key else "the top level"
            raise ConfigError(f"{self.source}: {what} must be a mapping of keys to values")
        for name in value:
            if name not in allowed:
                full = f"{key}.{name}" if key else str(name)
                hint = difflib.get_close_matches(str(name), allowed, n=1)
                fix = f"did you mean '{hint[0]}'?" if hint else f"valid keys: {', '.join(allowed)}"
                self.fail(full, f"is unknown; {fix}")
        return value

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be a non-empty string, not {value!r}")
        return str(value)

    def path(self, value: object, key: str, base: Path) -> Path | None:
        if value is None:
            return None
        expanded = Path(os.path.expandvars(self.string(value, key))).expanduser()
        return expanded if expanded.is_absolute() else (base / expanded).resolve()

    def database(self, value: object, base: Path) -> Path | PostgresDatabase:
        """A PostgreSQL URL, else a SQLite file's path (the default one when not given)."""
        if isinstance(value, str) and is_postgres_url(value.strip()):
            return PostgresDatabase(value.strip())
        return self.path(value, "database", base) or default_database_path()

    def host(self, value: object) -> str:
        """A machine name: printable, no spaces or ':' (hits show as host:path)."""
        text = self.string(value, "host").strip()
        if len(text) > 255 or not text.isprintable() or any(c in text for c in " :/"):
            self.fail("host", f"is {value!r}; use a short machine name without spaces, ':' or '/'")
        return text

    def folder(self, value: object, key: str, base: Path) -> Path | None:
        """An absolute, resolved folder path (it need not exist yet); None when not given."""
        path = self.path(value, key, base)
        if path is None:
            return None
        if path.exists() and not path.is_dir():
            self.fail(key, f"names {path}, which is not a directory; name a folder")
        return path.resolve()

    def root(self, value: object, key: str, base: Path, must_exist: bool) -> tuple[Path, bool]:
        """(absolute path, poll?) from `~/Pictures` or `{path: ~/Pictures, poll: true}`."""
        poll = False
        if isinstance(value, dict):
            entry = self.mapping(value, key, allowed=("path", "poll"))
            poll = self.boolean(entry.get("poll", False), f"{key}.poll")
            value = entry.get("path")
        path = self.path(value, key, base)
        assert path is not None  # a root of None is rejected by string()
        if path.exists() and not path.is_dir():
            self.fail(key, f"names {path}, which is not a directory; name a folder")
        if must_exist and not path.exists():
            self.fail(key, f"names {path}, which does not exist; create it or remove it from roots")
        return path.resolve(), poll

    def model_ref(self, value: object, key: str, base: Path, suffix: str | None) -> str:
        """A built-in name/tag stays as is; something that looks like a path must exist."""
        text = self.string(value, key)
        looks_like_path = (
            "/" in text or text.startswith("~") or (suffix is not None and text.endswith(suffix))
        )
        if not looks_like_path:
            return text
        path = self.path(text, key, base)
        assert path is not None
        if not path.is_file():
            self.fail(key, f"names the file {path}, which does not exist; fix the path")
        return str(path)

    def choice(self, value: object, key: str, options: tuple[str, ...]) -> str:
        if value not in options:
            self.fail(key, f"is {value!r}; use one of: {', '.join(options)}")
        return str(value)

    def integer(self, value: object, key: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(key, f"must be a whole number from {low} to {high}, not {value!r}")
        return value

    def number(self, value: object, key: str, low: float, high: float) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            self.fail(key, f"must be a number from {low:g} to {high:g} (seconds), not {value!r}")
        return float(value)

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {value!r}")
        return bool(value)

    def tcp(self, value: object) -> TcpAddress | None:
        """None, a port (loopback), or "HOST:PORT" ("[::1]:PORT" for IPv6)."""
        if value is None:
            return None
        return self.address(value, "tcp", example="'127.0.0.1:50051'")

    def address(self, value: object, key: str, *, example: str) -> TcpAddress:
        """A port (loopback), or "HOST:PORT" ("[::1]:PORT" for IPv6)."""
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            self.fail(key, f"must be a port or 'HOST:PORT' like {example}, not {value!r}")
        host, _, port = value.rpartition(":")
        host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            self.fail(key, f"is {value!r}; write a port from 0 to 65535 as 'HOST:PORT'")
        return TcpAddress(host, int(port))

    def web(self, value: object) -> TcpAddress | None:
        """off (false), a port, or "HOST:PORT" on a loopback address."""
        if value is False or value == "off":
            return None
        if isinstance(value, TcpAddress):  # the default
            return value
        address = self.address(value, "web", example="'127.0.0.1:8765' or off")
        if not address.loopback:
            self.fail(
                "web",
                f"is {value!r}: the web app serves only this machine; use a loopback address "
                "like 127.0.0.1:8765 (reach it from elsewhere through an SSH tunnel) or off",
            )
        return address

    def globs(self, value: object, key: str) -> tuple[str, ...]:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            self.fail(key, "must be a list of glob patterns like ['*.jpg', 'Screenshots/*']")
        return tuple(value)
