"""`zoo eval`, `zoo sample` and `zoo quant-sweep`: what stored runs are worth."""

from __future__ import annotations

from dataclasses import replace

from zoo.cli import command
from zoo.cli.options import parse_options
from zoo.errors import ZooError
from zoo.evaluate.generation import (
    GenProtocol,
    describe_generation,
    evaluate_generator,
    is_generator_run,
    sample_run,
)
from zoo.evaluate.ptq import PTQSession, describe, quant_sweep
from zoo.evaluate.stored import evaluate_run
from zoo.registry.quants import SWEEP
from zoo.runs.files import writable_folder


def cmd_eval(args) -> int:
    if args.lm_eval is not None:  # lm-eval is an optional extra: its module loads only here
        return command("eval --lm-eval")(args)
    if args.limit is not None or args.num_fewshot is not None:
        raise ZooError("--limit and --num-fewshot go with --lm-eval TASKS")
    if args.quant is not None:
        writable_folder(args.out, "--out")
        session = PTQSession(args.run, out=args.out, device=args.device)
        record = session.evaluate(args.quant, parse_options(args.quant_param, "--quant-param"))
        print(f"{record.run_id}: {describe(record)}")
        print(f"stored in {args.out / 'results.sqlite'}")
        return 0
    if args.quant_param:
        raise ZooError("--quant-param goes with --quant QUANT")

    sampling = _sampling_protocol(args)
    if is_generator_run(args.run, args.out):
        return _cmd_eval_generator(args, sampling)
    if sampling is not None or args.samples_per_class is not None or args.inception:
        raise ZooError("--cfg, --top-k, --top-p, --temperature, --sample-seed, "
                       "--samples-per-class and --inception are for image generators (var, rar)")
    report = evaluate_run(args.run, out=args.out, device=args.device)
    if "test_bpb" in report:  # a language model
        print(f"{report['run_id']}: test bits per byte {report['test_bpb']:.4f}, perplexity "
              f"{report['test_ppl']:.2f} (checkpoint of epoch {report['epoch']})")
        stored, shown = report.get("stored_test_bpb"), "{:.4f} bits per byte"
    else:
        print(f"{report['run_id']}: test accuracy {report['test_acc']:.2%}, "
              f"test loss {report['test_loss']:.4f} (checkpoint of epoch {report['epoch']})")
        stored, shown = report.get("stored_test_acc"), "{:.2%}"
    if stored is not None:
        print(f"stored at the end of training: {shown.format(stored)}")
    return 0


def _sampling_protocol(args, **defaults):
    """The sampling flags given, over the default GenProtocol (None when none was given)."""
    given = {name: getattr(args, flag) for name, flag in (
        ("cfg", "cfg"), ("top_k", "top_k"), ("top_p", "top_p"), ("temperature", "temperature"),
        ("seed", "sample_seed"))}
    given = {k: v for k, v in {**defaults, **given}.items() if v is not None}
    if not given:
        return None
    protocol = replace(GenProtocol(), **given)
    protocol.validate()
    return protocol


def _cmd_eval_generator(args, sampling) -> int:
    protocol = sampling or GenProtocol()
    if args.samples_per_class is not None:
        protocol = replace(protocol, samples_per_class=args.samples_per_class)
    protocol.validate()
    report, path = evaluate_generator(args.run, protocol, out=args.out, device=args.device,
                                      inception=args.inception)
    print(f"{report['run_id']}: {describe_generation(report)}")
    print(f"test token loss {report['test_loss']:.4f} (stored at the end of training: "
          f"{report['stored_test_loss']:.4f}); checkpoint of epoch {report['epoch']}")
    if "inception_fid" in report:
        print(f"Inception FID (torchmetrics, {report['gen_protocol']['samples']} samples): "
              f"{report['inception_fid']:.2f}")
    print(f"wrote {path}")
    return 0


def cmd_sample(args) -> int:
    if args.file is not None:
        writable_folder(args.file.parent, "--file")
    protocol = _sampling_protocol(args) or GenProtocol()
    path = sample_run(args.run, protocol, n=args.n, file=args.file, out=args.out,
                      device=args.device)
    print(f"wrote {path}")
    return 0


def cmd_quant_sweep(args) -> int:
    quants = [q.strip() for q in args.quants.split(",") if q.strip()] if args.quants is not None \
        else SWEEP
    if not quants:
        raise ZooError(f"--quants names no format: got '{args.quants}' (`zoo list quants`)")
    writable_folder(args.out, "--out")

    def report(record, cached):
        print(f"{record.run_id.split('+')[0]} {describe(record)}"
              + ("  (stored earlier)" if cached else ""))

    records = quant_sweep(args.runs, quants, out=args.out, device=args.device, redo=args.redo,
                          report=report)
    print(f"{len(records)} results in {args.out / 'results.sqlite'}; render them with "
          f"`zoo leaderboard --out {args.out}`")
    return 0
