"""Re-export of the old public path: `zoo.harness.lm_eval_adapter.ZooLM` is now
`zoo.evaluate.lm_eval`."""

from zoo.evaluate.lm_eval import ZooLM, run_lm_eval

__all__ = ["ZooLM", "run_lm_eval"]
