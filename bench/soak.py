"""Crash soak: SIGKILL the daemon at random moments while it indexes a changing folder.

    python -m bench.soak [--kills 20] [--images 300] [--seed 1]

Each round starts `clipd serve` (tiny model), waits until it is indexing, kills it with SIGKILL
after a random delay, checks the database (files and vectors one-to-one, no duplicate paths),
then changes the folder (new, deleted, renamed and rewritten images) so that the next start has
work again. At the end a last daemon finishes the index, and its files, failures and vectors must
equal those of a clean `clipd index` of the same folder.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt

from bench.common import BIN, write_config
from bench.corpus import photo
from clipd import sqlite
from clipd.config import Config, load_config
from clipd_api.v1 import clipd_pb2 as pb
from clipd_api.v1 import clipd_pb2_grpc as pb_grpc

# Vectors of the same image embedded in different batches, by clipd serve (torch) or clipd index
# (ONNX Runtime), differ by float rounding only, in fp32. Under precision auto the two may run
# different precisions (bf16 in torch, int8 in ONNX Runtime; each within cosine 0.999 of fp32),
# which is fine for search but not a crash-consistency check: the soak pins fp32.
VECTOR_TOLERANCE = 1e-4
SOAK_PRECISION = "fp32"


@dataclass
class Round:
    lived: float  # seconds from start to SIGKILL
    indexed_at_kill: int
    queued_at_kill: int


def add_images(root: Path, rng: random.Random, count: int) -> None:
    for _ in range(count):
        folder = root / f"set{rng.randrange(4)}"
        folder.mkdir(parents=True, exist_ok=True)
        size = (rng.randint(200, 640), rng.randint(200, 480))
        photo(rng, size).save(folder / f"img{rng.getrandbits(40):010x}.jpg", quality=85)


def change_folder(root: Path, rng: random.Random) -> None:
    """New, deleted, renamed and rewritten images, and a file that is not one."""
    add_images(root, rng, 12)
    existing = sorted(root.rglob("*.jpg"))
    rng.shuffle(existing)
    gone, moved, rewritten = existing[:3]
    gone.unlink()
    moved.rename(moved.with_name(f"moved-{moved.name}"))
    photo(rng, (320, 240)).save(rewritten, quality=70)
    (root / f"broken{rng.getrandbits(20)}.jpg").write_bytes(b"not a picture")


def check_database(database: Path) -> tuple[int, int]:
    """Assert files and vectors are one-to-one and paths unique; (files, failures)."""
    if not database.exists():
        return 0, 0
    conn = sqlite.connect(database)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'vectors'").fetchall():
            return 0, 0  # killed before the model was bound
        ((orphan_rows, orphan_vectors, files, paths, failures),) = conn.execute(
            """SELECT
                (SELECT count(*) FROM files WHERE id NOT IN (SELECT rowid FROM vectors)),
                (SELECT count(*) FROM vectors WHERE rowid NOT IN (SELECT id FROM files)),
                (SELECT count(*) FROM files), (SELECT count(DISTINCT path) FROM files),
                (SELECT count(*) FROM failures)"""
        ).fetchall()
    finally:
        conn.close()
    assert (orphan_rows, orphan_vectors) == (0, 0), (orphan_rows, orphan_vectors)
    assert files == paths, "duplicate paths"
    return files, failures


def stored_paths(database: Path) -> set[str]:
    if not database.exists():
        return set()
    conn = sqlite.connect(database)
    try:
        rows = conn.execute("SELECT path FROM files UNION ALL SELECT path FROM failures")
        return {path for (path,) in rows}
    finally:
        conn.close()


def status(stub: pb_grpc.ImageSearchStub) -> pb.Status | None:
    try:
        answer: pb.Status = stub.GetStatus(pb.StatusRequest(), timeout=2)
    except grpc.RpcError:  # not up yet, or already gone
        return None
    return answer


def kill_round(command: list[str], settings: Config, root: Path, rng: random.Random) -> Round:
    """Start the daemon and SIGKILL it at a random point of the work it has to do: once a
    random number of the pending files are stored, plus a random fraction of a batch."""
    files, failures = check_database(settings.database_file)
    known = stored_paths(settings.database_file)
    new = sum(1 for path in root.rglob("*.jpg") if str(path) not in known)
    target = files + failures + rng.randint(0, max(0, new - 1))
    daemon = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last: pb.Status | None = None
    started = time.monotonic()
    try:
        with grpc.insecure_channel(f"unix:{settings.socket}") as channel:
            stub = pb_grpc.ImageSearchStub(channel)  # type: ignore[no-untyped-call]
            while time.monotonic() < started + 120:
                last = status(stub)
                if last is not None and (
                    (last.state == pb.Status.INDEXING and last.indexed + last.failed >= target)
                    or (last.state == pb.Status.IDLE and not last.queued)  # done before target
                ):
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=60)
    indexed, queued = (last.indexed, last.queued) if last else (0, 0)
    return Round(time.monotonic() - started, indexed, queued)


def finish(command: list[str], socket: Path) -> None:
    """Run a daemon until it is idle, then stop it cleanly."""
    daemon = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with grpc.insecure_channel(f"unix:{socket}") as channel:
            stub = pb_grpc.ImageSearchStub(channel)  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                now = status(stub)
                if now is not None and now.state == pb.Status.IDLE and now.queued == 0:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("the last daemon did not become idle")
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0


Snapshot = tuple[dict[str, tuple[int, int, int, int, bytes]], dict[str, str], dict[str, bytes]]


def snapshot(database: Path) -> Snapshot:
    """(files by path, failure classes by path, vectors by path) of an index."""
    conn = sqlite.connect(database)
    try:
        files = {
            path: (size, mtime_ns, width, height, bytes(digest))
            for path, size, mtime_ns, width, height, digest in conn.execute(
                "SELECT path, size, mtime_ns, width, height, content_hash FROM files"
            )
        }
        failures = dict(conn.execute("SELECT path, error FROM failures").fetchall())
        vectors = {
            path: bytes(vector)
            for path, vector in conn.execute(
                "SELECT f.path, v.embedding FROM files f JOIN vectors v ON v.rowid = f.id"
            )
        }
    finally:
        conn.close()
    return files, failures, vectors


def assert_same_index(soaked: Path, clean: Path) -> None:
    files, failures, vectors = snapshot(soaked)
    clean_files, clean_failures, clean_vectors = snapshot(clean)
    assert files == clean_files, set(files) ^ set(clean_files)
    assert failures == clean_failures
    worst = max(
        float(np.abs(_floats(vector) - _floats(clean_vectors[path])).max())
        for path, vector in vectors.items()
    )
    assert worst < VECTOR_TOLERANCE, worst


def _floats(blob: bytes) -> npt.NDArray[np.float32]:
    return np.frombuffer(blob, np.float32)


def soak(root: Path, config: Path, clean_config: Path, kills: int, seed: int) -> list[Round]:
    """The whole soak on `root`: kills, checks, then the comparison with a clean index."""
    rng = random.Random(seed)
    settings = load_config(config)
    command = [str(BIN / "clipd"), "serve", "--config", str(config)]
    rounds = []
    for _ in range(kills):
        rounds.append(kill_round(command, settings, root, rng))
        check_database(settings.database_file)
        change_folder(root, rng)
    finish(command, settings.socket)
    check_database(settings.database_file)
    index = [str(BIN / "clipd"), "index", "--config", str(clean_config), str(root)]
    subprocess.run(index, check=True, capture_output=True)
    assert_same_index(settings.database_file, load_config(clean_config).database_file)
    return rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clipd-soak-"))
    root = work / "photos"
    try:
        add_images(root, random.Random(args.seed), args.images)
        config = write_config(work, root, "tiny", batch_size=8, precision=SOAK_PRECISION)
        (work / "clean").mkdir()
        clean = write_config(work / "clean", root, "tiny", precision=SOAK_PRECISION)
        started = time.perf_counter()
        rounds = soak(root, config, clean, args.kills, args.seed)
        elapsed = time.perf_counter() - started
        files, failures, _ = snapshot(work / "tiny.db")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mid = sum(r.queued_at_kill > 0 for r in rounds)
    print(f"{len(rounds)} SIGKILLs survived ({mid} with files queued) in {elapsed:.0f} s")
    for number, r in enumerate(rounds, 1):
        what = f"{r.indexed_at_kill} indexed, {r.queued_at_kill} queued"
        print(f"  kill {number:2d}: after {r.lived:.2f} s; {what}")
    print(f"final index: {len(files)} files, {len(failures)} failures; equal to a clean index")
    return 0


if __name__ == "__main__":
    sys.exit(main())
