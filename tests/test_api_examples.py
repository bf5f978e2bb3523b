"""The README's examples of calling the API from outside Python, checked against the real proto."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ConfigWriter
from fixtures.corpus import write_corpus
from google.protobuf import json_format
from harness import in_process_daemon

from clipd_api.v1 import clipd_pb2 as pb

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
SERVICE = pb.DESCRIPTOR.services_by_name["ImageSearch"]


def readme_blocks(language: str, containing: str) -> list[str]:
    blocks = re.findall(rf"```{language}\n(.*?)```", README, re.DOTALL)
    return [str(b) for b in blocks if containing in b]


def test_the_grpcurl_example_names_a_real_method_and_valid_fields() -> None:
    commands = "\n".join(readme_blocks("sh", "grpcurl")).replace("\\\n", " ")
    calls = [shlex.split(line) for line in commands.splitlines() if " -d " in line]
    assert calls, "the README shows a grpcurl call with a request body"
    for argv in calls:
        body = argv[argv.index("-d") + 1]
        package, _, method = argv[-1].rpartition("/")
        assert package == SERVICE.full_name
        descriptor = SERVICE.methods_by_name[method]
        request_class = getattr(pb, descriptor.input_type.name)
        # Parse refuses unknown fields and wrong types.
        request = json_format.Parse(body, request_class())
        assert request.ByteSize() > 0


def _node_can_load_grpc() -> bool:
    node = shutil.which("node")
    if node is None:
        return False
    probe = subprocess.run(
        [node, "-e", "require.resolve('@grpc/grpc-js'); require.resolve('@grpc/proto-loader')"],
        capture_output=True,
        check=False,
        cwd=REPO,
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    not _node_can_load_grpc(),
    reason="needs node with @grpc/grpc-js and @grpc/proto-loader (NODE_PATH may point at them)",
)
def test_the_node_example_searches_a_real_daemon(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    script = tmp_path / "search.js"
    [example] = readme_blocks("js", 'require("@grpc/grpc-js")')
    script.write_text(example)
    corpus = write_corpus(tmp_path / "pics", per_class=1)
    files = len(corpus.images) + len(corpus.bad)
    with in_process_daemon(write_config([corpus.root]), corpus.root, files):
        result = subprocess.run(
            ["node", str(script)], capture_output=True, text=True, timeout=60, check=False, cwd=REPO
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    for line in lines:
        score, path = line.split(" ", 1)
        assert -1 <= float(score) <= 1
        assert Path(path) in corpus.images
