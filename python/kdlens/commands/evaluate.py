"""``kdlens evaluate``: zero-shot evaluation of a model (optionally with a LoRA adapter) on benchmark tasks.

Example: ``kdlens evaluate --model runs/sft/final --tasks math --data-dir LLM-Adapters/dataset -o eval/sft``.
``kdlens evaluate --tasks list`` lists the tasks. Writes generations.parquet, results.parquet and
results.md into the output folder; re-running the same command resumes an interrupted run.
"""

from __future__ import annotations

NAME = "evaluate"
HELP = "evaluate a model zero-shot on benchmark tasks (paper prompts and answer extraction)"


def _key_value(text: str) -> tuple[str, str]:
    import argparse

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def add_arguments(parser) -> None:
    parser.add_argument("--model", help="model folder (save_pretrained) or hub id")
    parser.add_argument("--adapter", help="LoRA adapter folder (peft) to attach to the model")
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the adapter's if it has one, else the model's)")
    parser.add_argument("--tasks", required=True,
                        help="comma list of tasks and families (math, commonsense, instruct, synthetic, all); "
                             "'list' prints the known tasks")
    parser.add_argument("-o", "--out", help="output folder (resumed when it holds an unfinished run)")
    parser.add_argument("--name", help="model name in the tables (default: from the model/adapter folder)")
    data = parser.add_argument_group("data")
    data.add_argument("--data", action="append", type=_key_value, default=[], metavar="TASK=SOURCE",
                      help="test data of a task: a .json/.jsonl/.parquet file or a hub id (repeatable)")
    data.add_argument("--data-dir", help="folder in LLM-Adapters 'dataset/' or MiniLLM 'data/' layout")
    data.add_argument("--task-option", action="append", type=_key_value, default=[],
                      metavar="TASK.KEY=VALUE", help="loader option, e.g. synthetic.seed=0 synthetic.n_test=300")
    data.add_argument("--limit", type=int, help="evaluate only the first N items of each task")
    data.add_argument("--template", default="alpaca", choices=("alpaca", "alpaca-paper"),
                      help="prompt template (default: alpaca; alpaca-paper: the paper's exact bytes)")
    data.add_argument("--response-cut", default="instruction", choices=("instruction", "paper"),
                      help="where a response ends: instruction (default: at the first '### Instruction') "
                           "or paper (the paper's split('### Response:')[1].strip(), up to the next "
                           "'### Response:'); the paper's conditions: --paper-decoding --template "
                           "alpaca-paper --response-cut paper")
    dec = parser.add_argument_group("decoding (default: greedy)")
    dec.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    dec.add_argument("--paper-decoding", action="store_true",
                     help="the paper's decoding: sampling with T=1, top_k 0, top_p 1 (with --seeds and "
                          "--max-new-tokens, whose defaults 6 and 256 are the paper's)")
    dec.add_argument("--temperature", type=float, default=1.0)
    dec.add_argument("--top-k", type=int, default=0, help="0 = off")
    dec.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    dec.add_argument("--max-new-tokens", type=int, default=256)
    dec.add_argument("--seeds", default="6", help="comma list of seeds (several only with sampling)")
    dec.add_argument("--batch-size", type=int, default=16)
    run_ = parser.add_argument_group("run")
    run_.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    run_.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="model weights dtype")
    run_.add_argument("--no-progress", action="store_true", help="no progress bar")


def _list_tasks() -> str:
    from kdlens.eval.tasks import list_tasks
    from kdlens.markdown import markdown_table

    rows = [[t.name, t.family, t.metric, t.paper_size or "-", (t.folders or (t.name,))[0], t.description]
            for t in list_tasks()]
    return markdown_table(["task", "family", "metric", "paper size", "data folder", "extraction"], rows,
                          right=(3,))


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def run(args) -> int:
    from kdlens.errors import KdlensError

    if args.tasks.strip().lower() == "list":
        print(_list_tasks())
        return 0
    if not args.model:
        raise KdlensError("--model is required (a model folder or hub id)")
    if not args.out:
        raise KdlensError("-o/--out is required: the folder for generations.parquet and results")
    from kdlens.eval.run import evaluate
    from kdlens.eval.decode import PAPER_DECODING, Decoding

    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        raise KdlensError(f"--seeds must be a comma list of integers, got {args.seeds!r}") from None
    if args.paper_decoding:
        decoding = Decoding(**{**PAPER_DECODING.to_dict(), "batch_size": args.batch_size,
                               "seeds": seeds, "max_new_tokens": args.max_new_tokens})
    else:
        decoding = Decoding(do_sample=args.sample, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, max_new_tokens=args.max_new_tokens, seeds=seeds,
                            batch_size=args.batch_size)
    options: dict[str, dict] = {}
    for key, value in args.task_option:
        if "." not in key:
            raise KdlensError(f"--task-option needs TASK.KEY=VALUE, got {key}={value}")
        task, opt = key.split(".", 1)
        from kdlens.eval.tasks import get_task

        options.setdefault(get_task(task).name, {})[opt] = _parse_value(value)
    tokenizer = None
    if args.tokenizer:
        from kdlens.models import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    result = evaluate(args.model, args.tasks, args.out, adapter=args.adapter, tokenizer=tokenizer,
                      decoding=decoding, data=dict(args.data), data_dir=args.data_dir,
                      task_options=options, limit=args.limit, template=args.template,
                      response_cut=args.response_cut,
                      name=args.name, device=args.device, dtype=args.dtype,
                      progress=not args.no_progress)
    print(result.markdown(), end="")
    print(f"\nwrote {result.out_dir}/generations.parquet, results.parquet, results.md")
    return 0
