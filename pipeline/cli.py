"""Command line: argparse subcommands; the one place exceptions become messages and exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from manifests.store import Store
from pipeline import __version__, config, predict, report, runner
from pipeline.options import stage_flags, verbosity
from stages.base import ORDER, STAGES, ConfigError
from stages.train import TrainParams, fit

log = logging.getLogger("facesift")


class Parser(argparse.ArgumentParser):
    """Bad usage is one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _stage_flags(p: argparse.ArgumentParser) -> None:
    for name in (n for n in ORDER if n in STAGES):
        stage_flags(p.add_argument_group(f"{name} stage ([{name}] in the config file)"), name)


def build_parser() -> Parser:
    p = Parser(prog="facesift", description="Clean, split and train on large face-emotion datasets.")
    p.add_argument("--version", action="version", version=f"facesift {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    r = sub.add_parser("run", help="run pipeline stages over an input dataset",
                       description="Run stages over --input into the workspace --out; re-running resumes.")
    g = r.add_argument_group("run")
    g.add_argument("--input", "-i", help="dataset folder, .zip file or FER2013 .csv")
    g.add_argument("--out", "-o", help="workspace folder (created; holds manifests, images, reports)")
    g.add_argument("--stages", help="comma-separated stages to run, in any order (default: compress)")
    g.add_argument("--config", type=Path, help="TOML file with [run], [source] and per-stage tables; flags win")
    g.add_argument("--workers", "-j", help="parallel worker processes (default: all cores)")
    g.add_argument("--backend", help="executor: sequential | loky | dask (default: loky when workers > 1)")
    g.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786 (implies --backend dask)")
    g.add_argument("--shard-size", dest="shard_size", help="items per shard, the unit of work and resume (default 0: about 1%% of the items, 8 to 256)")
    g.add_argument("--retries", help="times a failed shard is retried (default: 2)")
    g.add_argument("--max-pixels", dest="max_pixels", help="refuse larger images as too_large (default: 100000000)")
    g.add_argument("--profile", action="store_true", default=None,
                   help="write WORK/reports/profile.csv: the workers' seconds per step (read, decode, reduce, each stage, "
                        "encode, write), summed over shards, and print a one-line summary")
    g.add_argument("--dry-run", action="store_true", help="list the input and say what would run; write nothing")
    s = r.add_argument_group("source")
    s.add_argument("--layout", dest="source.layout", help="auto | folder | aihub | fer2013 (default: auto)")
    s.add_argument("--label-policy", dest="source.label_policy",
                   help="AIHub label: uploader | majority (2 of 3 annotators) | unanimous (default: majority)")
    s.add_argument("--labels", dest="source.labels", help="comma-separated labels to keep; others become unlabeled rows")
    s.add_argument("--alias", dest="source.aliases", action="append", metavar="RAW=LABEL",
                   help="map a raw label (folder name, AIHub emotion) to a canonical one; repeatable")
    _stage_flags(r)
    verbosity(r)

    st = sub.add_parser("status", help="per stage: shards done/pending, kept, rejected by reason, failed",
                        description="Show the state of a workspace without changing it.")
    st.add_argument("work", type=Path, help="workspace folder given as --out to run")
    verbosity(st)
    report.add_parser(sub)  # report and predict add their own subcommand, setting func=<callable(args) -> int>

    t = sub.add_parser("train", help="train the expression CNN on WORK/manifest.csv (same code as the train stage)",
                       description="Train on the kept items of a workspace (WORK/manifest.csv: key, file, label, split); "
                                   "artifacts go to WORK/model/. Re-running after a kill resumes from the last epoch.")
    t.add_argument("work", type=Path, help="workspace folder given as --out to run")
    t.add_argument("--config", type=Path, help="TOML file whose [train] table sets parameters (flags win)")
    stage_flags(t, "train", prefixed=False)
    verbosity(t)
    predict.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    _log_to_stderr(level)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "status":
            return cmd_status(args.work)
        if args.command == "train":
            return cmd_train(args)
        return int(args.func(args))
    except ConfigError as e:
        print(f"facesift: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facesift: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


def _log_to_stderr(level: int) -> None:
    """One handler of ours on the root logger (replacing the previous call's), others left alone."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_facesift", False)]:
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname).1s %(message)s"))
    handler._facesift = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("distributed", "tensorflow", "absl", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def cmd_run(args: argparse.Namespace) -> int:
    file = config.load_toml(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "dry_run", "verbose", "quiet")}
    cfg = config.build(file, flags)
    result = runner.run(cfg, dry_run=args.dry_run)
    print(result.summary)
    if not result.ok:
        shards = ", ".join(f"{k}: {len(v)}" for k, v in result.failed_shards.items())
        print(f"facesift: some shards failed ({shards}); re-run the same command to retry them", file=sys.stderr)
        return 1
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train from WORK/manifest.csv with the train stage's code; parameters: defaults < the --config
    file's [train] table < flags."""
    table = config.load_toml(args.config).get("train", {}) if args.config else {}
    params = config.stage_params("train", table, vars(args))
    assert isinstance(params, TrainParams)
    result = fit.train(fit.records_from_manifest(args.work), args.work, params)
    m = result.metrics
    print(f"{m['model']}: {m['evaluated_on']} accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
          f"on {m['count']} images (best epoch {m['best_epoch']} of {m['epochs_run']}); model in {result.model_dir}")
    return 0


def cmd_status(work: Path) -> int:
    store = Store(work)
    items = store.read_items()
    if not items:
        raise ConfigError(f"{work} is not a facesift workspace (no manifests/ingest/items.parquet)")
    shards = max((r["shard"] for r in items), default=-1) + 1
    refused = Counter(r["reason"] for r in items if r["status"] != "kept")
    print(f"{work}: {len(items)} items, {shards} shards; refused at ingest: {sum(refused.values())}"
          + (f" ({_fmt(refused)})" if refused else ""))
    failed = store.failures().get("shards", {})
    print(f"{'stage':<10} {'done':>6} {'pending':>8} {'kept':>8} {'rejected':>9} {'failed':>7}  reasons")
    for name in sorted(store.stages_on_disk(), key=lambda n: ORDER.index(n) if n in ORDER else 99):
        done = store.done_shards(name)
        if done or not store.dataset_done(name):
            _status_line(name, len(done), shards - len(done), list(store.read_stage(name)),
                         f"  [failed shards: {', '.join(map(str, failed[name]))}]" if failed.get(name) else "")
        if store.dataset_done(name):
            _status_line(f"{name}*", 1, 0, store.read_dataset(name), "")
    if any(store.dataset_done(n) for n in store.stages_on_disk()):
        print("* dataset-level decision over the items kept before it (done/pending count the one step)")
    return 1 if any(failed.values()) else 0


def _status_line(name: str, done: int, pending: int, rows: list[dict[str, Any]], extra: str) -> None:
    counts = Counter(r["status"] for r in rows)
    reasons = Counter(r["reason"] for r in rows if r["status"] != "kept")
    print(f"{name:<10} {done:>6} {pending:>8} {counts['kept']:>8} {counts['rejected']:>9} {counts['failed']:>7}  {_fmt(reasons)}{extra}")


def _fmt(c: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in c.most_common())
