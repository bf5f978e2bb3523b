"""`clipq duplicates` against a real daemon with the tiny model, over generated near-copies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ConfigWriter
from fixtures.near_copies import NearCopies, write_near_copies
from harness import in_process_daemon, run_clipq, wait_until

from clipd import sqlite
from clipd.config import Config, load_config
from clipd_api.v1 import clipd_pb2 as pb
from clipd_api.v1 import clipd_pb2_grpc as pb_grpc


@pytest.fixture
def copies(tmp_path: Path) -> NearCopies:
    return write_near_copies(tmp_path / "pics")


@pytest.fixture
def config(copies: NearCopies, write_config: ConfigWriter) -> Config:
    return load_config(write_config([copies.root]))


def file_count(copies: NearCopies) -> int:
    return sum(1 for p in copies.root.rglob("*") if p.is_file())


def groups(data: list[dict[str, Any]]) -> set[tuple[str, frozenset[str]]]:
    return {(g["tier"], frozenset(f["path"] for f in g["files"])) for g in data}


def expected(copies: NearCopies) -> set[tuple[str, frozenset[str]]]:
    return {
        ("exact", frozenset(map(str, copies.exact[0]))),
        ("reencoded", frozenset(map(str, copies.reencoded[0]))),
        ("variant", frozenset(map(str, copies.variant[0]))),
    }


def test_clipq_duplicates_reports_each_tier_and_keeps_other_pictures_apart(
    copies: NearCopies, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    with in_process_daemon(config, copies.root, file_count(copies)):
        code, out, err = run_clipq(capsys, "duplicates", "--json", "--socket", str(config.socket))
        assert code == 0
        assert "clipq:" not in err  # no note: every file was compared by pixels
        data = json.loads(out)
        assert groups(data) == expected(copies)
        for group in data:
            first = group["files"][0]
            assert first["score"] == pytest.approx(1.0, abs=1e-4)
            assert set(first) >= {"path", "score", "width", "height", "size_bytes", "mtime"}
        right = next(g for g in data if g["tier"] == "reencoded")["files"]
        assert right[0]["path"] == str(copies.reencoded[0][0])  # most pixels, most bytes
        assert (right[-1]["width"], right[-1]["height"]) == (320, 240)

        code, out, _ = run_clipq(capsys, "duplicates", "--socket", str(config.socket))
        assert code == 0
        blocks = out.strip().split("\n\n")
        assert [block.splitlines()[0] for block in blocks] == [
            "exact  2 files",
            "reencoded  3 files",
            "variant  3 files",
        ]
        assert blocks[0].splitlines()[1].split()[-1] == str(copies.exact[0][0])

        exports = copies.root / "exports"
        code, out, _ = run_clipq(
            capsys, "duplicates", "--json", "--under", str(exports), "--socket", str(config.socket)
        )
        assert all(f["path"].startswith(f"{exports}/") for g in json.loads(out) for f in g["files"])
        assert len(json.loads(out)) == 2

        code, out, _ = run_clipq(
            capsys, "duplicates", "--json", "--tier", "exact", "--socket", str(config.socket)
        )
        assert groups(json.loads(out)) == {("exact", frozenset(map(str, copies.exact[0])))}

        code, out, err = run_clipq(
            capsys, "duplicates", "--json", "-n", "1", "--socket", str(config.socket)
        )
        assert len(json.loads(out)) == 1
        assert "1 of 3 groups shown; --offset 1 shows more" in err


BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"threshold": 0.2}, "threshold must be between 0.5 and 1"),
    ({"threshold": float("nan")}, "threshold must be between 0.5 and 1"),
    ({"tier": 9}, "tier 9 is unknown"),
    ({"under": ["relative/dir"]}, "is not an absolute path"),
    ({"limit": 5000}, "limit 5000 is over the maximum of 1000"),
]


def test_bad_duplicates_requests_get_invalid_argument(copies: NearCopies, config: Config) -> None:
    with (
        in_process_daemon(config, copies.root, file_count(copies)) as daemon,
        daemon.channel() as ch,
    ):
        stub = pb_grpc.ImageSearchStub(ch)  # type: ignore[no-untyped-call]
        for fields, message in BAD_REQUESTS:
            with pytest.raises(grpc.RpcError) as caught:
                stub.Duplicates(pb.DuplicatesRequest(**fields), timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in caught.value.details()


def test_a_database_without_signatures_gets_them_without_the_model(
    copies: NearCopies, config: Config
) -> None:
    with in_process_daemon(config, copies.root, file_count(copies)):
        pass
    conn = sqlite.connect(config.database_file)
    conn.execute("UPDATE files SET pixels = NULL")  # as a database from before signatures
    conn.commit()
    conn.close()
    with (
        in_process_daemon(config, copies.root, file_count(copies)) as daemon,
        daemon.client() as client,
    ):
        wait_until(lambda: not client.duplicates().unchecked, "pixel signatures made")
        page = client.duplicates()
        assert {(g.tier, frozenset(f.path for f in g.files)) for g in page} == expected(copies)
        assert daemon.indexer.model_passes == 0  # nothing was embedded again
