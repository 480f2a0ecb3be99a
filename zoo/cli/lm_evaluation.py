"""`zoo eval RUN --lm-eval TASKS`: a stored language model on lm-evaluation-harness tasks (the
optional `lm` extra; `zoo eval` without --lm-eval never loads this module)."""

from __future__ import annotations

from zoo.errors import ZooError
from zoo.evaluate.lm_eval import evaluate_run_lm, parse_task_list, print_lm_eval_report


def cmd_lm_eval(args) -> int:
    limit = args.limit
    if limit is not None and limit >= 1:
        if limit != int(limit):
            raise ZooError(f"--limit takes a whole number of documents (or a fraction below 1), "
                           f"got {limit:g}")
        limit = int(limit)
    report, path = evaluate_run_lm(args.run, parse_task_list(args.lm_eval), out=args.out,
                                   device=args.device, batch_size=args.batch_size, limit=limit,
                                   num_fewshot=args.num_fewshot)
    print_lm_eval_report(report)
    print(f"wrote {path}")
    return 0
