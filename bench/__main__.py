"""`make bench`: every figure of the performance table, measured in one run.

    python -m bench [--quick] [--images N] [--sizes 10000 100000 1000000] [--no-techniques]
                    [--rclip-images N] [--no-rclip] [--web-images N]

Prints the machine, then the table (a)-(i), then duplicate detection at scale (20k rows with
--quick, else 100k) and what pixel signatures cost the loaders, then clipd against rclip on the
same photos in the same run (bench/rclip.py), then what each technique gives. ViT-B-32 runs
with random weights (speed does not depend on weights). Generated photos, rclip's environment
and the shared model are cached under bench/out/. --quick: fewer images, rows and repeats, for
a check that everything runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from bench import (
    corpus,
    daemon,
    duplicates,
    formats,
    pipeline,
    rclip,
    reconcile,
    search,
    web,
    web_api,
)
from bench.common import compile_sources
from clipd.embedder import Embedder
from clipd.image_model import for_the_daemon


def machine() -> str:
    model = "unknown CPU"
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx512f", "avx512_bf16", "amx_bf16", "amx_int8")
    have = ", ".join(f for f in wanted if f in flags) or "none of " + ", ".join(wanted)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} CPUs ({have}); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; Python {platform.python_version()}; "
        f"load average {load}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int)
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--no-techniques", action="store_true")
    parser.add_argument("--rclip-images", type=int)
    parser.add_argument("--no-rclip", action="store_true")
    parser.add_argument("--web-images", type=int)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress in logs
    compile_sources()
    images = args.images or (40 if args.quick else 200)
    sizes = args.sizes or ([10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    repeats = 1 if args.quick else 3
    reconcile_files = 20_000 if args.quick else 100_000

    print(machine())
    photos = corpus.corpus(images)
    paths = corpus.files(photos)
    print(f"corpus: {len(paths)} files under {photos} (phone JPEGs, portrait, EXIF, PNG, WebP)")
    work = Path(tempfile.mkdtemp(prefix="clipd-bench-"))
    try:
        # The daemon's model: what `clipd serve` and `clipd index` run images in here. It may
        # set torch's threads for its texts alone: the techniques below get them back.
        threads = torch.get_num_threads()
        embedder = for_the_daemon(pipeline.VIT_B_32)
        print(
            f"ViT-B-32, random weights, precision auto: images in {pipeline.described(embedder)}"
            f", texts in {pipeline.described_texts(embedder)}"
        )
        rates = pipeline.measure(photos, paths, embedder, batch=16, repeats=repeats)
        scale = [search.scale(work, rows, 50, 3 if rows >= 1_000_000 else 20) for rows in sizes]
        busy = search.while_indexing(work, photos, embedder, 100_000 if not args.quick else 10_000)
        duplicate_sizes = [20_000] if args.quick else [100_000]
        duplicates.report(
            work, duplicate_sizes, paths[:40], embedder, rounds=3 if args.quick else 7
        )
        del embedder
        torch.set_num_threads(threads)
        served = daemon.run(work, photos, queries=20 if not args.quick else 5,
                            fresh_files=10 if not args.quick else 3)  # fmt: skip
        reconciles = reconcile.measure(reconcile_files, runs=repeats)
        # The web page against 10k phone photos (300 with --quick: making 10k takes hours).
        web_images = args.web_images or (300 if args.quick else 10_000)
        page = web.run(work / "web", images=web_images,
                       queries=5 if args.quick else 15)  # fmt: skip
        # Thumbnails: what making them at index time costs, and what serving them costs.
        api_side = web_api.run(work / "web-api", images=40 if args.quick else 200,
                               repeats=1 if args.quick else 3)  # fmt: skip
        _table(rates, scale, busy, served, (reconcile_files, reconciles), page=page,
               api_side=api_side)  # fmt: skip
        if not args.no_rclip:
            rclip_photos = corpus.corpus(args.rclip_images or (40 if args.quick else 400))
            print(f"\nclipd against rclip on {rclip_photos}:")
            versus = rclip.compare(rclip_photos, repeats, queries=3 if args.quick else 10)
            rclip.print_table(versus, repeats)
        if not args.no_techniques:
            _techniques(photos, paths, repeats)
        formats.report(rounds=3 if args.quick else 5)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _table(
    rates: pipeline.Rates,
    scale: list[search.ScaleResult],
    busy: search.BusyResult,
    served: daemon.DaemonResult,
    reconciled: tuple[int, list[float]],
    *,
    page: web.WebResult,
    api_side: web_api.WebApiResult,
) -> None:
    reconcile_files, reconciles = reconciled
    rows = [
        ("(a) index end to end (file -> committed row)", f"{rates.end_to_end:.1f} img/s",
         f"{rates.end_to_end / rates.bound:.0%} of bound {rates.bound:.1f}"),
        ("    model only (same batch 16, same precision)", f"{rates.model_rate:.1f} img/s",
         f"{rates.model_cpu_s * 1e3:.1f} CPU-ms/img"),
        ("    decode only (draft + resize + preprocess)",
         f"{1 / rates.decode_cpu_s:.1f} img/s/core",
         f"{rates.decode_cpu_s * 1e3:.1f} CPU-ms/img; full decode "
         f"{rates.decode_full_cpu_s * 1e3:.1f}"),
    ]  # fmt: skip
    for result in scale:
        rows.append((
            f"(b) Search p50 / p99, {result.rows:,} rows (RAM)",
            f"{result.ram.p50_ms:.1f} / {result.ram.p99_ms:.1f} ms",
            f"recall@20 {result.recall:.3f}; vec0 {result.vec0.p50_ms:.0f} / "
            f"{result.vec0.p99_ms:.0f} ms; RAM {result.ram_mb:.0f} MB, loaded in "
            f"{result.load_s:.1f} s",
        ))  # fmt: skip
    rows += [
        ("(c) text query + search p50 / p99 while indexing", f"{busy.busy.p50_ms:.0f} / "
         f"{busy.busy.p99_ms:.0f} ms", f"idle {busy.idle.p50_ms:.0f} / {busy.idle.p99_ms:.0f} ms"),
        ("(d) clipq wall time p50 / p90", f"{daemon.median_ms(served.clipq_ms):.0f} / "
         f"{statistics.quantiles(served.clipq_ms, n=10)[-1] * 1e3:.0f} ms",
         f"server took_ms p50 {statistics.median(served.server_ms):.1f}"),
        ("(e) freshness, landed -> searchable, median",
         f"{statistics.median(served.freshness_s):.2f} s",
         f"max {max(served.freshness_s):.2f} s, settle_seconds 1.0"),
        ("(f) daemon RSS idle / while indexing", f"{served.rss_idle_mb:.0f} / "
         f"{served.rss_indexing_mb:.0f} MB", "ViT-B-32"),
        (f"(g) restart reconcile, {reconcile_files:,} unchanged files",
         f"{statistics.median(reconciles):.2f} s", "median"),
        *web.report(page),
        *web_api.report(api_side),
    ]  # fmt: skip
    width = max(len(row[0]) for row in rows)
    print()
    for label, value, note in rows:
        print(f"{label:{width}}  {value:>18}  {note}")


def _techniques(photos: Path, paths: list[Path], repeats: int) -> None:
    print("\ntechniques (medians, interleaved):")
    bf16 = Embedder(replace(pipeline.VIT_B_32, precision="bf16"))
    sample = corpus.mixed(paths, 20)
    draft = [pipeline.decode_cpu_seconds(sample, bf16, draft=d) for d in (True, False)]
    print(f"  decode CPU-ms/img: draft/reduce {draft[0] * 1e3:.1f}, full {draft[1] * 1e3:.1f}")
    for key, kind in corpus.KINDS.items():
        of_kind = [p for p in paths if corpus.kind_of(corpus.number_of(p)) == key][:6]
        if of_kind:
            ms = pipeline.decode_cpu_seconds(of_kind, bf16, draft=True) * 1e3
            print(f"    {kind.name}: {ms:.1f} CPU-ms/img")
    del bf16
    for label, name, value in pipeline.techniques(photos, repeats):
        print(f"  {label}: {name}: {value:.1f}")


if __name__ == "__main__":
    sys.exit(main())
