"""`zoo train`: one run, from flags to a stored result."""

from __future__ import annotations

import os

from zoo.cli.options import parse_options, parse_params
from zoo.evaluate.generation import describe_generation
from zoo.registry.kinds import GENERATE, LANGUAGE
from zoo.runs.config import TrainConfig
from zoo.runs.files import writable_folder
from zoo.tasks.kinds import make_trainer


def cmd_train(args) -> int:
    config = TrainConfig.for_arch(
        args.arch, act=args.act, init=args.init, quant=args.quant, dataset=args.dataset,
        seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing, train_subset=args.train_subset,
        eval_subset=args.eval_subset, optimizer=args.optimizer, schedule=args.schedule,
        aug_shift=args.aug_shift, aug_flip=args.aug_flip, tta_flip=args.tta_flip, ema=args.ema,
        lr_scale=args.lr_scale,
        act_params=parse_params(args.act_param, "--act-param"),
        init_params=parse_options(args.init_param, "--init-param"),
        arch_params=parse_options(args.arch_param, "--arch-param"),
        quant_params=parse_options(args.quant_param, "--quant-param"), qat=args.qat,
        tokenizer=args.tokenizer, block_size=args.block_size,
        steps_per_epoch=args.steps_per_epoch)
    writable_folder(args.out, "--out")
    trainer = make_trainer(config, out=args.out, device=args.device, compile=args.compile,
                           show_progress=not args.no_progress, log=args.log)
    outcome = trainer.run()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 alone reports
        return 0
    m = outcome.record.metrics
    if outcome.already_done:
        print(f"run {outcome.record.run_id} already completed; stored result:")
    elif outcome.resumed_from:
        print(f"resumed {outcome.record.run_id} after epoch {outcome.resumed_from}")
    if config.kind() == GENERATE:
        print(describe_generation(m))
        print(f"test token loss {m['test_loss']:.4f}, {m['params']:,} params, "
              f"{m['train_time_s']:.1f} s training; samples in "
              f"{outcome.run_dir.path / 'samples.png'}")
    elif config.kind() == LANGUAGE:
        print(f"test bits per byte: {m['test_bpb']:.4f}  (perplexity {m['test_ppl']:.2f}, "
              f"val bpb {m['val_bpb']:.4f}, {m['params']:,} params, {m['train_time_s']:.1f} s "
              f"training, {m['samples_per_s']:,.0f} tokens/s)")
    else:
        print(f"test accuracy: {m['test_acc']:.2%}  (test loss {m['test_loss']:.4f}, "
              f"{m['params']:,} params, {m['train_time_s']:.1f} s training, "
              f"{m['samples_per_s']:.0f} samples/s)")
    print(f"run saved to {outcome.run_dir.path}")
    return 0
