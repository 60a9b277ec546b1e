"""``kdlens teacher-cache``: run a teacher over a training file once and store its top-k logits.

Examples::

    kdlens teacher-cache out_dir=cache/t data=task/train.json teacher=runs/teacher/final k=64 \\
        temperatures=[1.0,2.0] tokenizer=task/tokenizer
    kdlens teacher-cache --config cache.toml          # the same keys in a TOML file

Running the same command again continues an interrupted build. See kdlens.train.teacher_cache.
"""

from __future__ import annotations

import argparse

NAME = "teacher-cache"
HELP = "cache a teacher's top-k logits and logsumexp over a training set (train with teacher_cache=DIR)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file with TeacherCacheConfig keys")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="TeacherCacheConfig keys (TOML values): out_dir, data, teacher, k, temperatures, ...")


def run(args: argparse.Namespace) -> int:
    import json

    from kdlens.config import load_config
    from kdlens.train.teacher_cache import TeacherCacheConfig, build_cache

    cfg = load_config(TeacherCacheConfig, args.config, args.overrides)
    result = build_cache(cfg)
    print(json.dumps(result.to_dict(), indent=2))
    return 0
