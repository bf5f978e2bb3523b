"""clipd against rclip 3.3.0, side by side in one run, on the same photos and the same model.

    python -m bench.rclip [--quick] [--images N] [--repeats R]

rclip is installed from PyPI into its own virtual environment under bench/out/ the first time.
Both tools get the same random-weight ViT-B-32-256 (rclip's architecture): clipd loads it as an
OpenCLIP checkpoint, rclip as the ONNX files its conversion script (scripts/convert_model.py in
its repository) makes: TorchScript exporter, opset 18, input "input", output "output", a dynamic
batch axis, fp32; laid out as rclip reads them from RCLIP_DATADIR. Every figure is a whole
process as a user runs it, each at its defaults, the two tools alternating run by run
(A B A B ...) so that both share the machine's load:

- index from empty: a new database, model load included (rclip: its first search, which indexes
  the working directory before answering; clipd: `clipd index`);
- steady state: the marginal cost of a photo between indexing all photos and a fifth of them
  with the same mix of kinds, (T(N) - T(n)) / (N - n), in wall and in CPU time, which leaves
  start-up out for both (CPU time is the steadier figure on a machine shared with other work);
- one text query: `rclip -n` (no re-index) against `clipq` to a warm `clipd serve`;
- peak RSS while indexing: the indexing process's maximum resident set (getrusage);
- clipd's pipeline bound (bench.pipeline): images/s if every core did nothing but decode and
  embed, from the CPU time per photo of each, measured in this process on 60 photos with the
  corpus's mix of kinds (bench.corpus.mixed), at clipd's defaults (draft decoding; the image
  tower in ONNX Runtime where `clipd index` picks it, else torch, bf16 where the CPU has it).

clipd's first `clipd index` of a model exports its image tower to ONNX (where it runs the tower
in ONNX Runtime): the bench runs it once before the rounds, in a cache of its own, and prints
its time and memory apart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import yaml

from bench import corpus, pipeline
from bench.common import BIN, compile_sources
from clipd.config import ModelConfig
from clipd.image_model import for_indexing
from clipq import Client, ClipqError

RCLIP_VERSION = "3.3.0"
MODEL_NAME = "ViT-B-32-256"
# Where rclip looks for its model inside RCLIP_DATADIR (rclip/model_download.py).
_RCLIP_MODEL_DIR = "ViT-B-32-256-datacomp_s34b_b86k"
_RCLIP_VOCAB = Path("tokenizer/bpe_simple_vocab_16e6.txt.gz")
_VENV = corpus.OUT / f"rclip-{RCLIP_VERSION}"
_MODEL = corpus.OUT / "vit-b-32-256-random"
_QUERIES = ["a dog on a beach", "red brick wall", "sunset over mountains", "a bowl of fruit"]


@dataclass(frozen=True, slots=True)
class Run:
    """One finished process: wall seconds, CPU seconds (user + sys), peak RSS in MiB."""

    wall_s: float
    cpu_s: float
    rss_mib: float


@dataclass(frozen=True, slots=True)
class ToolResult:
    index: list[Run]  # all N photos from empty
    head: list[Run]  # a fifth, with the corpus's mix of kinds, from empty
    query_s: list[float]

    def marginal(self, images: int, head_images: int, measure: str) -> float:
        """Seconds (wall_s or cpu_s) per photo past the fifth: start-up left out."""
        full: float = statistics.median(getattr(run, measure) for run in self.index)
        part: float = statistics.median(getattr(run, measure) for run in self.head)
        return max(full - part, 1e-9) / (images - head_images)


@dataclass(frozen=True, slots=True)
class Comparison:
    images: int
    head_images: int
    rclip: ToolResult
    clipd: ToolResult
    clipd_bound: float  # images/s, clipd's pipeline bound on these photos
    clipd_model: str  # what ran clipd's image tower: runtime, precision (and int8's drift)
    clipd_first: Run  # clipd's first index of the fifth, which exports its image tower


def ensure_rclip() -> Path:
    """The rclip command, installed into its own environment the first time."""
    command = _VENV / "bin" / "rclip"
    stamp = _VENV / ".installed"
    if stamp.exists() and command.exists():
        return command
    shutil.rmtree(_VENV, ignore_errors=True)
    print(f"installing rclip {RCLIP_VERSION} into {_VENV} ...")
    subprocess.run([sys.executable, "-m", "venv", str(_VENV)], check=True)
    subprocess.run([_VENV / "bin" / "pip", "install", "--quiet", f"rclip=={RCLIP_VERSION}"],
                   check=True)  # fmt: skip
    stamp.touch()
    return command


def ensure_model() -> Path:
    """bench/out/vit-b-32-256-random: weights.pt for clipd, rclip/ as RCLIP_DATADIR's model."""
    stamp = _MODEL / ".complete"
    if stamp.exists():
        return _MODEL
    print(f"exporting a random-weight {MODEL_NAME} for both tools into {_MODEL} ...")
    shutil.rmtree(_MODEL, ignore_errors=True)
    onnx_dir = _MODEL / "rclip" / _RCLIP_MODEL_DIR
    onnx_dir.mkdir(parents=True)
    torch.manual_seed(0)
    model = open_clip.create_model(MODEL_NAME, pretrained=None).eval()
    torch.save(model.state_dict(), _MODEL / "weights.pt")
    side = int(model.visual.image_size[0])
    context = int(model.context_length)
    with warnings.catch_warnings():  # the exporter's own deprecation and opset notes
        warnings.simplefilter("ignore")
        export_visual(model, side, onnx_dir / "visual.onnx")
        _export(_Textual(model), torch.zeros(1, context, dtype=torch.long),
                onnx_dir / "textual.onnx")  # fmt: skip
    vocab = _MODEL / "rclip" / _RCLIP_VOCAB
    vocab.parent.mkdir(parents=True)
    shutil.copy2(Path(open_clip.__file__).parent / _RCLIP_VOCAB.name, vocab)
    stamp.touch()
    return _MODEL


def export_visual(model: Any, side: int, path: Path) -> None:
    """An OpenCLIP model's image tower to ONNX, as rclip's conversion script exports it."""
    _export(_Visual(model), torch.randn(1, 3, side, side), path)


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        opset_version=18,
        dynamo=False,
    )


class _Visual(torch.nn.Module):
    """The image tower alone, as rclip exports it."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.visual: torch.nn.Module = clip.visual

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.visual(pixels)
        return out


class _Textual(torch.nn.Module):
    """encode_text (tokens in, projected features out), as rclip exports it."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.clip.encode_text(tokens)
        return out


# Runs a command as its own child and writes down the child's exit code, wall and CPU seconds
# and peak RSS. Linux carries a process's peak RSS across exec, so a tool forked straight from
# this bench process (torch imported, a model exported or loaded) would report this process's
# peak as its own; forked from this small one, it reports its own.
_MEASURE = """
import os, subprocess, sys, time
report, command = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
child = subprocess.Popen(command)
_, status, usage = os.wait4(child.pid, 0)
wall = time.perf_counter() - started
with open(report, "w") as out:
    cpu = usage.ru_utime + usage.ru_stime
    out.write(f"{os.waitstatus_to_exitcode(status)} {wall} {cpu} {usage.ru_maxrss}")
"""


def run_process(command: list[str | Path], *, cwd: Path, env: dict[str, str]) -> Run:
    """Run a command to its end; raise SystemExit with its stderr if it fails."""
    with tempfile.TemporaryFile() as errors, tempfile.NamedTemporaryFile("r") as report:
        subprocess.run([sys.executable, "-c", _MEASURE, report.name, *map(str, command)],
                       cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=errors,
                       check=True)  # fmt: skip
        code, wall, cpu, rss_kib = report.read().split()
        if int(code):
            errors.seek(0)
            tail = errors.read()[-2000:].decode(errors="replace")
            raise SystemExit(f"{command[0]} exited {code}:\n{tail}")
    return Run(float(wall), float(cpu), int(rss_kib) / 1024)


class Rclip:
    """rclip 3.3.0 with the bench model, one fresh RCLIP_DATADIR per index run."""

    def __init__(self, command: Path, model: Path, work: Path) -> None:
        self._command = command
        self._model = model / "rclip"
        self._work = work
        self._runs = 0
        self.datadir = work  # the last index run's, for queries

    def index(self, photos: Path, images: int) -> Run:
        self._runs += 1
        self.datadir = self._work / f"rclip-data-{self._runs}"
        self.datadir.mkdir()
        (self.datadir / _RCLIP_MODEL_DIR).symlink_to(self._model / _RCLIP_MODEL_DIR)
        (self.datadir / _RCLIP_VOCAB.parent).symlink_to(self._model / _RCLIP_VOCAB.parent)
        run = run_process([self._command, "-t", "1", _QUERIES[0]], cwd=photos, env=self._env())
        with sqlite3.connect(self.datadir / "db.sqlite3") as db:
            (indexed,) = db.execute("SELECT count(*) FROM images WHERE deleted IS NULL").fetchone()
        if indexed != images:
            raise SystemExit(f"rclip indexed {indexed} of {images} photos")
        return run

    def query(self, photos: Path, text: str) -> float:
        return run_process([self._command, "-n", "-t", "20", text], cwd=photos,
                           env=self._env()).wall_s  # fmt: skip

    def _env(self) -> dict[str, str]:
        return {**os.environ, "RCLIP_DATADIR": str(self.datadir)}


class Clipd:
    """clipd with the bench model at its default precision, one fresh database per index run."""

    def __init__(self, model: Path, work: Path) -> None:
        self._weights = model / "weights.pt"
        self._work = work
        self._runs = 0
        self.config = work
        # A cache of its own, so that the first run exports the ONNX image tower as a user's
        # first `clipd index` does (bench.rclip measures that run apart).
        self.env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache")}

    def index(self, photos: Path, images: int) -> Run:
        self._runs += 1
        self.config = self._write_config(photos, f"clipd-{self._runs}")
        run = run_process([BIN / "clipd", "index", "--config", self.config, photos],
                          cwd=self._work, env=self.env)  # fmt: skip
        database = yaml.safe_load(self.config.read_text())["database"]
        with sqlite3.connect(database) as db:
            (indexed,) = db.execute("SELECT count(*) FROM files").fetchone()
        if indexed != images:
            raise SystemExit(f"clipd indexed {indexed} of {images} photos")
        return run

    def _write_config(self, photos: Path, name: str) -> Path:
        config = {
            "roots": [str(photos)],
            "database": str(self._work / f"{name}.db"),
            "socket": str(self._work / f"{name}.sock"),
            "model": {"name": MODEL_NAME, "pretrained": str(self._weights), "device": "cpu"},
            "log_level": "warning",
        }
        path = self._work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path


def compare(photos: Path, repeats: int, queries: int) -> Comparison:
    """Both tools, interleaved: index all and a fifth from empty, then queries."""
    paths = corpus.files(photos)
    head = _mixed_subset(photos, paths, max(1, len(paths) // 5))
    head_images = len(corpus.files(head))
    model = ensure_model()
    command = ensure_rclip()
    work = Path(tempfile.mkdtemp(prefix="clipd-bench-rclip-"))
    try:
        rclip, clipd = Rclip(command, model, work), Clipd(model, work)
        print(f"  clipd's first run: index {head_images} photos, exporting its image tower")
        first = clipd.index(head, head_images)
        runs: dict[str, list[Run]] = {key: [] for key in ("rclip", "clipd", "rclip5", "clipd5")}
        for number in range(repeats):
            print(f"  round {number + 1}/{repeats}: index {len(paths)} and {head_images} photos")
            runs["rclip5"].append(rclip.index(head, head_images))
            runs["clipd5"].append(clipd.index(head, head_images))
            runs["rclip"].append(rclip.index(photos, len(paths)))
            runs["clipd"].append(clipd.index(photos, len(paths)))
        rclip_s, clipd_s = _query_times(photos, rclip, clipd, queries)
        bound, tower = pipeline_bound(photos, paths, model, clipd.env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Comparison(
        len(paths),
        head_images,
        ToolResult(runs["rclip"], runs["rclip5"], rclip_s),
        ToolResult(runs["clipd"], runs["clipd5"], clipd_s),
        bound,
        tower,
        first,
    )


def pipeline_bound(
    photos: Path, paths: list[Path], model: Path, env: dict[str, str], sample: int = 60
) -> tuple[float, str]:
    """Images/s if every core only decoded and embedded (bench.pipeline's bound): decode CPU
    per photo over a sample with the corpus's mix of kinds, model CPU per photo at clipd's batch,
    in the runtime `clipd index` chose (its cache, from env, holds the ONNX export if so);
    and which runtime and precision that was."""
    print(f"  pipeline bound: decoding {min(sample, len(paths))} photos, then the model alone")
    config = ModelConfig(MODEL_NAME, str(model / "weights.pt"), device="cpu")
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = env["XDG_CACHE_HOME"]
    try:
        embedder = for_indexing(config)
    finally:
        if saved is None:
            del os.environ["XDG_CACHE_HOME"]
        else:
            os.environ["XDG_CACHE_HOME"] = saved
    decode_s = pipeline.decode_cpu_seconds(corpus.mixed(paths, sample), embedder, draft=True)
    batch = pipeline.config_for(photos).batch_size  # clipd's default
    model_s, _ = pipeline.model_seconds(embedder, batch, batches=6)
    return (os.cpu_count() or 1) / (decode_s + model_s), pipeline.described(embedder)


def _mixed_subset(photos: Path, paths: list[Path], count: int) -> Path:
    """A folder of hard links to `count` photos with the corpus's mix, same relative paths."""
    head = photos.with_name(f"{photos.name}-mixed-{count}")
    stamp = head / ".complete"
    if stamp.exists():
        return head
    shutil.rmtree(head, ignore_errors=True)
    for path in corpus.mixed(paths, count):
        target = head / path.relative_to(photos)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    stamp.touch()
    return head


def _query_times(
    photos: Path, rclip: Rclip, clipd: Clipd, count: int
) -> tuple[list[float], list[float]]:
    """Whole-process wall seconds of one text query each, alternating, new texts each time."""
    config = yaml.safe_load(clipd.config.read_text())
    socket = Path(config["socket"])
    env = {**clipd.env, "CLIPD_SOCKET": str(socket)}
    daemon = subprocess.Popen([BIN / "clipd", "serve", "--config", str(clipd.config)], env=env,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_idle(socket)
        rclip_s: list[float] = []
        clipd_s: list[float] = []
        for number in range(count):
            text = f"{_QUERIES[number % len(_QUERIES)]} {number}"
            rclip_s.append(rclip.query(photos, text))
            clipd_s.append(_clipq(env, text))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    return rclip_s, clipd_s


def _clipq(env: dict[str, str], text: str) -> float:
    return run_process([BIN / "clipq", "-n", "20", text], cwd=Path.cwd(), env=env).wall_s


def _wait_idle(socket: Path) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            with Client(socket, timeout=5) as client:
                status = client.status()
            if status.state == "idle" and not status.queued:
                return
        except ClipqError:  # not listening yet, or the model still loading
            pass
        time.sleep(0.2)
    raise SystemExit("clipd serve did not become idle")


def table(result: Comparison) -> list[tuple[str, str, str, str]]:
    """Rows (figure, rclip, clipd, clipd's advantage) of the comparison, medians."""
    med = statistics.median
    tools = (result.rclip, result.clipd)
    n, head = result.images, result.head_images
    walls = [med(r.wall_s for r in tool.index) for tool in tools]
    cpus = [med(r.cpu_s for r in tool.index) for tool in tools]
    steady_wall = [tool.marginal(n, head, "wall_s") for tool in tools]
    steady_cpu = [tool.marginal(n, head, "cpu_s") for tool in tools]
    start_cpu = [cpu - n * per_photo for cpu, per_photo in zip(cpus, steady_cpu, strict=True)]
    queries = [med(tool.query_s) for tool in tools]
    rss = [med(r.rss_mib for r in tool.index) for tool in tools]
    return [
        (f"index {n} photos from empty (whole process)", f"{walls[0]:.1f} s", f"{walls[1]:.1f} s",
         f"{walls[0] / walls[1]:.2f}x faster"),
        ("  CPU time (user+sys)", f"{cpus[0]:.0f} s", f"{cpus[1]:.0f} s",
         f"{cpus[0] / cpus[1]:.2f}x less"),
        (f"steady state, {n - head} photos past {head}", f"{1 / steady_wall[0]:.1f} img/s",
         f"{1 / steady_wall[1]:.1f} img/s", f"{steady_wall[0] / steady_wall[1]:.2f}x faster"),
        ("  CPU per photo", f"{steady_cpu[0] * 1e3:.0f} ms", f"{steady_cpu[1] * 1e3:.0f} ms",
         f"{steady_cpu[0] / steady_cpu[1]:.2f}x less"),
        ("start-up CPU (total - photos x steady)", f"{start_cpu[0]:.1f} s",
         f"{start_cpu[1]:.1f} s", ""),
        ("one text query, whole process", f"{queries[0] * 1e3:.0f} ms",
         f"{queries[1] * 1e3:.0f} ms", f"{queries[0] / queries[1]:.2f}x faster"),
        ("peak RSS while indexing", f"{rss[0]:.0f} MiB", f"{rss[1]:.0f} MiB",
         f"{rss[0] / rss[1]:.2f}x less"),
        ("clipd's pipeline bound (decode + model CPU)", "", f"{result.clipd_bound:.1f} img/s",
         f"steady state {100 / steady_wall[1] / result.clipd_bound:.0f}% of it"),
    ]  # fmt: skip


def print_table(result: Comparison, repeats: int) -> None:
    queries = len(result.clipd.query_s)
    print(f"\nclipd against rclip {RCLIP_VERSION}, {MODEL_NAME} random weights, "
          f"{result.images} photos, medians of {repeats} interleaved runs, "
          f"{queries} queries each:")  # fmt: skip
    rows = [("", "rclip", "clipd", "clipd"), *table(result)]
    width = max(len(row[0]) for row in rows)
    for label, rclip, clipd, ratio in rows:
        print(f"{label:{width}}  {rclip:>11}  {clipd:>11}  {ratio}")
    first = result.clipd_first
    print(f"clipd's first run ({result.head_images} photos, exporting its ONNX image tower once "
          f"per model): {first.wall_s:.1f} s, {first.cpu_s:.0f} CPU-s, peak RSS "
          f"{first.rss_mib:.0f} MiB")  # fmt: skip
    print(f"clipd's image tower ran in {result.clipd_model}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int)
    parser.add_argument("--repeats", type=int)
    args = parser.parse_args()
    images = args.images or (40 if args.quick else 400)
    repeats = args.repeats or (1 if args.quick else 3)
    compile_sources()  # `make bench` (bench.__main__) does it once for all of its parts
    result = compare(corpus.corpus(images), repeats, queries=3 if args.quick else 10)
    print_table(result, repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
