"""``kdlens train``: build a TrainConfig from a TOML file (or a preset) plus key=value overrides, run it.

Examples::

    kdlens train --synthetic-task work/task            # write the offline task + tokenizer once
    kdlens train --config sft.toml out_dir=runs/t max_steps=200
    kdlens train --preset seqkd out_dir=runs/kd data=d.json student=s teacher=t
"""

from __future__ import annotations

import argparse

NAME = "train"
HELP = "train a student: SFT (also the task-aware teacher) or KD (SeqKD, RevKD, GKD, ...)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file with TrainConfig keys")
    parser.add_argument("--preset", help="start from the paper's settings: sft, seqkd, revkd, gkd")
    parser.add_argument("--synthetic-task", metavar="DIR",
                        help="write the built-in synthetic task (train.json, test.json, tokenizer/) to DIR and exit")
    parser.add_argument("--synthetic-seed", type=int, default=0, help="seed of --synthetic-task")
    parser.add_argument("--synthetic-train", type=int, default=4000, help="training problems of --synthetic-task")
    parser.add_argument("--synthetic-test", type=int, default=300, help="test problems of --synthetic-task")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="TrainConfig overrides (TOML values)")


def run(args: argparse.Namespace) -> int:
    import json

    if args.synthetic_task:
        from kdlens.data.synthetic import make_task, write_task

        paths = write_task(args.synthetic_task, make_task(args.synthetic_seed, args.synthetic_train,
                                                          args.synthetic_test))
        print(json.dumps({k: str(v) for k, v in paths.items()}))
        return 0

    from kdlens.config import load_config
    from kdlens.errors import KdlensError
    from kdlens.train import PRESETS, TrainConfig, train

    base = None
    if args.preset:
        if args.preset not in PRESETS:
            raise KdlensError(f"unknown preset {args.preset!r}; known: {', '.join(PRESETS)}")
        base = PRESETS[args.preset]
    cfg = load_config(TrainConfig, args.config, args.overrides, base=base)
    result = train(cfg)
    print(json.dumps({k: v for k, v in result.to_dict().items() if k != "config"}, indent=2))
    return 0
