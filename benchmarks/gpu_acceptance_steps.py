"""The Python half of benchmarks/gpu_acceptance.sh: the script runs the steps, this file reads
what they leave (the boards, junit XML, the smoke runs) into summary.json, records the device,
runs the one-process DDP check, and is the dry run's checker. The script calls it as
`python3 benchmarks/gpu_acceptance_steps.py SUBCOMMAND ...` and keeps a copy of it with each
run's output (detail/run/meta/gpu_acceptance_helper.py). Subcommands:

  summary DIR [--final] [--print]   summary.json from the plan and what the steps left in DIR
  junit FILE                        one line of counts; exit 1 on a failure, error or skip
  device FILE                       what the machine is (torch, CUDA, CuPy); exit 3 without CUDA
  ddp FILE [--device D]             DDP through zoo's own helpers, world size 1 (nccl on CUDA)
  smoke DIR ARCH...                 the smoke runs' verdict; exit 1 on any failure
  dry-check DIR REPO                check every step's command (the dry run)
  verdict SUMMARY                   the run's last word: "ok", or why not

Only `device`, `ddp` and `dry-check` import torch, CuPy, pytest or the parts of zoo that import
torch (at function level); the rest needs the standard library and zoo.cli, so the summary is
written even when the carried wheels did not install. (Not named test_*: pytest collects
benchmarks/.)
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import io
import json
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from unittest import mock

from zoo import cli as zoo_cli

TARGETS = [
    {"name": "elementwise_copy_bandwidth", "step": "bench-kernels", "op": ">=", "threshold": 0.85,
     "unit": "fraction of copy bandwidth",
     "description": "every formula activation's fused CUDA kernel, forward+backward, moves its "
                    "bytes at >= 85% of the device's copy bandwidth (the minimum over the "
                    "activations; zoo bench kernels, 2^26 bf16 elements)"},
    {"name": "elementwise_vs_torch_compile", "step": "bench-kernels-compile", "op": ">=",
     "threshold": 1.0, "unit": "x torch.compile",
     "description": "every formula activation's fused kernel, forward+backward, is at least as "
                    "fast as torch.compile of its PyTorch reference (the minimum over the "
                    "activations; zoo bench kernels --compile)"},
    {"name": "group_rational_vs_eager", "step": "bench-kernels", "op": ">=", "threshold": 20.0,
     "unit": "x eager reference",
     "description": "the group-rational kernel, forward+backward, is >= 20x its eager PyTorch "
                    "reference (zoo bench kernels: rational on (tokens, 1024 channels))"},
    {"name": "kat_step_vs_vit_step", "step": "step-ratio", "op": "<=", "threshold": 1.5,
     "unit": "kat step / vit step",
     "description": "a kat training step takes <= 1.5x a vit training step (bf16 autocast, the "
                    "fashion-mnist recipe's shape; benchmarks/gpu_step_ratio.py)"},
    {"name": "fake_quant_copy_bandwidth", "step": "bench-quant", "op": ">=", "threshold": 0.80,
     "unit": "fraction of copy bandwidth",
     "description": "every format's fake-quantization kernel moves its bytes at >= 80% of the "
                    "copy bandwidth (the minimum over the formats; zoo bench quant --device cuda)"},
]
ELEMENT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


# --- reading what the steps left ---------------------------------------------------------------

def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def step_dir(root: Path, name: str) -> Path | None:
    found = sorted((root / "detail" / "steps").glob(f"[0-9][0-9]-{name}"))
    return found[0] if found else None


def junit_counts(path: Path) -> dict | None:
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return None
    root = tree.getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    bad = []
    for case in root.iter("testcase"):
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                message = (element.get("message") or "").splitlines()[0:1]
                bad.append({"test": f"{case.get('classname')}::{case.get('name')}", "kind": kind,
                            "message": message[0][:200] if message else ""})
    counts["not_passed"] = bad[:25]
    counts["not_passed_total"] = len(bad)
    return counts


def md_rows(text: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in `text`, keyed by its header cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    if len(lines) < 2:
        return []
    header = [cell.strip() for cell in lines[0].strip().strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip().strip("|").split("|"))))
            for line in lines[2:]]


def number(cell: str | None) -> float | None:
    if cell is None:
        return None
    text = cell.replace(",", "").rstrip("x%").strip()
    try:
        value = float(text)
    except ValueError:
        return None
    return value / 100 if cell.strip().endswith("%") else value


def measured_on(text: str) -> str:
    m = re.search(r"^\*\*Measured on:\*\* (.*?)\.?\s*$", text, re.M)
    if not m:
        raise ValueError("no '**Measured on:**' line")
    return m.group(1)


def kernel_board(path: Path) -> dict:
    """leaderboards/kernels.md as numbers: {'copy_gbps', 'numel', 'dtype', 'rows': [...]}."""
    text = path.read_text()
    header = measured_on(text)
    copy = re.search(r"copy bandwidth ([\d.,]+) GB/s", header)
    size = re.search(r"([\d,]+) elements of (\w+)", header)
    if not copy or not size:
        raise ValueError(f"cannot read the copy bandwidth and size from {header!r}")
    rows = []
    for row in md_rows(text):
        rows.append({"act": row["act"], "impl": row["impl"], "fwd_ms": number(row["fwd (ms)"]),
                     "fwdbwd_ms": number(row["fwd+bwd (ms)"]),
                     "fwdbwd_gbps": number(row["fwd+bwd GB/s"]),
                     "vs_reference": number(row["vs reference"])})
    if not rows:
        raise ValueError("no table rows")
    return {"measured_on": header, "copy_gbps": number(copy.group(1)),
            "numel": int(size.group(1).replace(",", "")), "dtype": size.group(2), "rows": rows}


def quant_board(path: Path) -> dict:
    text = path.read_text()
    header = measured_on(text)
    copy = re.search(r"copy bandwidth ([\d.,]+) GB/s", header)
    rows = [{"format": row["format"], "kernel_gbps": number(row["kernel GB/s"]),
             "reference_gbps": number(row["reference GB/s"]),
             "speedup": number(row["vs reference"]), "bitwise": row["bitwise"]}
            for row in md_rows(text)]
    if not rows:
        raise ValueError("no table rows")
    return {"measured_on": header, "copy_gbps": number(copy.group(1)) if copy else None,
            "rows": rows}


def kernel_rows(board: dict, impl: str) -> dict[str, dict]:
    return {r["act"]: r for r in board["rows"] if r["impl"] == impl}


def minimum(per_item: dict[str, float]) -> tuple[float | None, str | None]:
    if not per_item:
        return None, None
    worst = min(per_item, key=per_item.get)
    return per_item[worst], worst


def target_values(root: Path) -> dict[str, dict]:
    """{target name: {'measured', 'worst', 'per_item', 'note', ...}} from the artifacts found."""
    found: dict[str, dict] = {}
    found.update(kernel_targets(step_dir(root, "bench-kernels")))
    found.update(compile_target(step_dir(root, "bench-kernels-compile")))
    found.update(quant_target(step_dir(root, "bench-quant")))
    found.update(ratio_target(step_dir(root, "step-ratio")))
    return found


BOARD_ERRORS = (OSError, ValueError, KeyError, ZeroDivisionError, TypeError)


def kernel_targets(d: Path | None) -> dict[str, dict]:
    """elementwise_copy_bandwidth and group_rational_vs_eager, off bench-kernels' board."""
    board_path = d / "leaderboards" / "kernels.md" if d else None
    if not (board_path and board_path.is_file()):
        return {}
    found: dict[str, dict] = {}
    try:
        board = kernel_board(board_path)
        kernels = kernel_rows(board, "zoo kernel")
        nbytes = board["numel"] * ELEMENT_BYTES.get(board["dtype"], 0)
        bw = {act: r["fwdbwd_gbps"] / board["copy_gbps"] for act, r in kernels.items()
              if act != "rational" and r["fwdbwd_gbps"] and board["copy_gbps"]}
        fwd = {act: 2 * nbytes / (r["fwd_ms"] * 1e-3) / 1e9 / board["copy_gbps"]
               for act, r in kernels.items()
               if act != "rational" and r["fwd_ms"] and board["copy_gbps"] and nbytes}
        value, worst = minimum(bw)
        found["elementwise_copy_bandwidth"] = {
            "measured": value, "worst": worst, "per_item": _rounded(bw),
            "forward_only": _rounded(fwd), "copy_gbps": board["copy_gbps"],
            "measured_on": board["measured_on"],
            "note": None if bw else "no `zoo kernel` rows: the fused kernels did not run "
                                    "(no CUDA or no CuPy?)"}
        rational = kernels.get("rational")
        found["group_rational_vs_eager"] = {
            "measured": rational["vs_reference"] if rational else None,
            "measured_on": board["measured_on"],
            "note": None if rational else "no `zoo kernel` row for rational"}
    except BOARD_ERRORS as exc:
        for name in ("elementwise_copy_bandwidth", "group_rational_vs_eager"):
            found[name] = {"measured": None, "note": f"cannot read {board_path}: {exc}"}
    return found


def compile_target(d: Path | None) -> dict[str, dict]:
    """elementwise_vs_torch_compile, off bench-kernels-compile's board (and its log)."""
    board_path = d / "leaderboards" / "kernels.md" if d else None
    if not (board_path and board_path.is_file()):
        return {}
    try:
        board = kernel_board(board_path)
        kernels, compiled = kernel_rows(board, "zoo kernel"), kernel_rows(board, "torch.compile")
        ratio = {act: kernels[act]["vs_reference"] / compiled[act]["vs_reference"]
                 for act in kernels if act != "rational" and act in compiled
                 and kernels[act]["vs_reference"] and compiled[act]["vs_reference"]}
        value, worst = minimum(ratio)
        log = (d / "log.txt").read_text(errors="replace") if (d / "log.txt").is_file() else ""
        note = None if ratio else "no pair of `zoo kernel` and `torch.compile` rows"
        if "recompile_limit" in log or "cache_size_limit" in log:
            note = ("torch._dynamo hit its recompile limit: torch.compile rows after that "
                    "ran eagerly; these ratios are not valid")
        return {"elementwise_vs_torch_compile": {
            "measured": value, "worst": worst, "per_item": _rounded(ratio),
            "measured_on": board["measured_on"], "note": note}}
    except BOARD_ERRORS as exc:
        return {"elementwise_vs_torch_compile": {"measured": None,
                                                 "note": f"cannot read {board_path}: {exc}"}}


def quant_target(d: Path | None) -> dict[str, dict]:
    """fake_quant_copy_bandwidth, off bench-quant's board."""
    board_path = d / "leaderboards" / "quant-kernels.md" if d else None
    if not (board_path and board_path.is_file()):
        return {}
    try:
        board = quant_board(board_path)
        frac = {r["format"]: r["kernel_gbps"] / board["copy_gbps"] for r in board["rows"]
                if r["kernel_gbps"] and board["copy_gbps"]}
        value, worst = minimum(frac)
        return {"fake_quant_copy_bandwidth": {
            "measured": value, "worst": worst, "per_item": _rounded(frac),
            "bitwise_all": all(r["bitwise"] == "yes" for r in board["rows"]),
            "copy_gbps": board["copy_gbps"], "measured_on": board["measured_on"],
            "note": None if frac else "no kernel timings: the kernels could not run"}}
    except BOARD_ERRORS as exc:
        return {"fake_quant_copy_bandwidth": {"measured": None,
                                              "note": f"cannot read {board_path}: {exc}"}}


def ratio_target(d: Path | None) -> dict[str, dict]:
    """kat_step_vs_vit_step, off step-ratio's JSON."""
    ratio = read_json(d / "step-ratio.json") if d else None
    if not ratio:
        return {}
    return {"kat_step_vs_vit_step": {
        "measured": ratio.get("ratio"), "headline": ratio.get("headline"),
        "per_item": {k: {"ratio": round(v["ratio"], 4), "vit_ms": round(v["vit_ms"], 4),
                         "kat_ms": round(v["kat_ms"], 4), "batch_size": v["batch_size"]}
                     for k, v in ratio.get("shapes", {}).items()},
        "rational_kernel": ratio.get("rational_kernel"), "device": ratio.get("device"),
        "note": None if ratio.get("rational_kernel") else
        "the group-rational CUDA kernel could not launch: kat ran its PyTorch reference"}}


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in values.items()}


def finite_losses(metrics: dict) -> tuple[bool, dict]:
    picked = {k: v for k, v in metrics.items()
              if isinstance(v, (int, float)) and (k.endswith("loss") or k.endswith("bpb"))}
    curve = metrics.get("curve") or {}
    values = list(picked.values()) + [v for key, seq in curve.items() if "loss" in key
                                      for v in (seq or []) if isinstance(v, (int, float))]
    return bool(values) and all(math.isfinite(v) for v in values), picked


def smoke_verdicts(root: Path, archs: list[str]) -> dict[str, dict]:
    verdicts = {}
    for arch in archs:
        runs = root / "runs" / arch
        info = {}
        for line in _lines(runs / "smoke.txt"):
            key, _, value = line.partition("=")
            info[key] = value
        results = [p for p in runs.glob("*/result.json")]
        result = read_json(results[0]) if len(results) == 1 else None
        finite, losses = finite_losses(result.get("metrics", {})) if result else (False, {})
        log2 = _text(runs / "2-resume.log")
        log3 = _text(runs / "3-completed.log")
        verdict = {
            "interrupted_after_checkpoint": info.get("killed_after_checkpoint") == "1",
            "exit_codes": [info.get(f"run{i}_exit") for i in (1, 2, 3)],
            "resumed": "resumed " in log2, "already_completed": "already completed" in log3,
            "status": result.get("status") if result else None, "losses": losses,
            "finite": finite, "run_dirs": len(results),
        }
        problems = []
        if info.get("run1_exit") is None:
            problems.append("the first run did not start")
        if not verdict["interrupted_after_checkpoint"]:
            problems.append("the first run ended before its first checkpoint could be "
                            "interrupted (resume not exercised)" if info.get("run1_exit") == "0"
                            else f"the first run failed before a checkpoint (exit "
                                 f"{info.get('run1_exit')})")
        if info.get("run2_exit") != "0":
            problems.append(f"the re-run exited {info.get('run2_exit')}")
        elif verdict["interrupted_after_checkpoint"] and not verdict["resumed"]:
            problems.append("the re-run did not say 'resumed'")
        if info.get("run3_exit") != "0" or not verdict["already_completed"]:
            problems.append("the third run did not say 'already completed'")
        if verdict["status"] != "completed":
            problems.append(f"result status {verdict['status']}")
        if not finite:
            problems.append("a non-finite (or no) loss")
        verdict["problems"] = problems
        verdict["ok"] = not problems or problems == [
            "the first run ended before its first checkpoint could be interrupted (resume not "
            "exercised)"]
        verdicts[arch] = verdict
    return verdicts


def _lines(path: Path) -> list[str]:
    return _text(path).splitlines()


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# --- summary.json ------------------------------------------------------------------------------

def write_summary(root: Path, final: bool = False) -> dict:
    meta_dir = root / "detail" / "run" / "meta"
    meta = read_json(meta_dir / "run.json") or {}
    steps = [step_record(root, line) for line in _lines(meta_dir / "plan.tsv")]
    targets = target_records(root, {s["name"]: s["status"] for s in steps})
    summary = {
        "schema": 1, "script": "benchmarks/gpu_acceptance.sh", **meta,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "finished": final,
        "device": next((s.get("device") for s in steps if s.get("device")), None),
        "steps": steps, "targets": targets,
        "all_steps_passed": all(s["status"] in ("passed", "checked") for s in steps),
        "all_targets_met": all(t["met"] is True for t in targets),
        "boards": sorted(p.name for p in root.glob("*.md")),
    }
    tmp = root / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, root / "summary.json")
    return summary


def step_record(root: Path, plan_line: str) -> dict:
    """One step of the summary: its line of plan.tsv, its step.json and what it left."""
    index, name, kind, cap = plan_line.split("\t")[:4]
    d = step_dir(root, name)
    record = (read_json(d / "step.json") if d else None) or {}
    step = {"name": name, "kind": kind, "status": record.get("status", "pending"),
            "duration_s": record.get("duration_s"), "timeout_s": record.get("timeout_s"),
            "cap_s": int(cap), "exit_code": record.get("exit_code"),
            "note": record.get("note") or None,
            "log": f"detail/steps/{d.name}/log.txt" if d else None}
    if d and (d / "junit.xml").is_file():
        step["junit"] = f"detail/steps/{d.name}/junit.xml"
        step["tests"] = junit_counts(d / "junit.xml")
    if d and name == "setup":
        step["device"] = read_json(d / "device.json")
        wheels = read_json(d / "wheels.json")
        if wheels:
            step["wheels"] = {k: wheels.get(k) for k in ("mode", "ok", "errors", "wheels")}
            step["wheels"]["warnings"] = len(wheels.get("warnings", []))
    if d and name == "ddp-nccl":
        step["ddp"] = read_json(d / "ddp.json")
    if d and name == "smoke":
        archs = [a for a in record.get("archs", "").split(",") if a]
        step["runs"] = smoke_verdicts(d, archs)
    return step


def target_records(root: Path, step_status: dict[str, str]) -> list[dict]:
    """Every target of TARGETS with its measured value (if any) and whether it is met."""
    measured = target_values(root)
    targets = []
    for target in TARGETS:
        value = dict(measured.get(target["name"], {}))
        got = value.pop("measured", None)
        if got is None:
            met = None
        elif target["op"] == ">=":
            met = got >= target["threshold"]
        else:
            met = got <= target["threshold"]
        note = value.pop("note", None)
        if got is None and note is None:
            note = f"step {target['step']}: {step_status.get(target['step'], 'not planned')}"
        if met is not None and note and "not valid" in note:
            met = None
        targets.append({**target, "goal": f"{target['op']} {target['threshold']:g}",
                        "measured": round(got, 4) if isinstance(got, float) else got,
                        "met": met, "note": note, "detail": value or None})
    return targets


def print_summary(summary: dict) -> None:
    print(f"\n{'step':24} {'status':9} {'time':>7}  note")
    for s in summary["steps"]:
        duration = f"{s['duration_s']:.0f}s" if isinstance(s["duration_s"], (int, float)) else "-"
        extra = ""
        if s.get("tests"):
            t = s["tests"]
            extra = (f"{t['passed']} passed, {t['failures']} failed, {t['errors']} errors, "
                     f"{t['skipped']} skipped")
        print(f"{s['name']:24} {s['status']:9} {duration:>7}  {extra or s.get('note') or ''}")
    print(f"\n{'target':30} {'goal':>8} {'measured':>10}  met")
    for t in summary["targets"]:
        got = "-" if t["measured"] is None else f"{t['measured']:.3f}"
        met = {True: "yes", False: "NO", None: "-"}[t["met"]]
        print(f"{t['name']:30} {t['goal']:>8} {got:>10}  {met}"
              + (f"  ({t['note']})" if t.get("note") and t["met"] is not True else ""))


# --- on the GPU machine ------------------------------------------------------------------------

def device_info(path: Path) -> int:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if info["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}",
                    multiprocessors=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1),
                    devices=torch.cuda.device_count(),
                    nccl=".".join(map(str, torch.cuda.nccl.version())) if
                    torch.distributed.is_nccl_available() else None)
    try:
        import cupy

        info["cupy"] = cupy.__version__
        info["cupy_devices"] = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - any failure here is the finding
        info["cupy"] = None
        info["cupy_error"] = f"{type(exc).__name__}: {exc}"[:300]
    path.write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))
    if info["cuda_available"]:
        print(f"{info['name']} (sm {info['capability']}, {info['multiprocessors']} SMs, "
              f"{info['memory_gib']} GiB), torch {info['torch']} (CUDA {info['torch_cuda']}), "
              f"cupy {info['cupy']}")
    if not info["cuda_available"]:
        print("gpu acceptance: torch sees no CUDA device", file=sys.stderr)
        return 3
    if info["cupy"] is None:
        print("gpu acceptance: CuPy cannot be used: the fused kernels will not run",
              file=sys.stderr)
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp(path: Path | None, device: str = "cuda", steps: int = 4) -> dict:
    """A world of one process through zoo.train.distributed: process_group (nccl on CUDA,
    gloo on the CPU), sync_batchnorm and wrap (DDP), a few bf16 steps of vit and resnet on
    digits, an all_reduce and a broadcast. One GPU cannot hold two NCCL ranks, so this is the
    NCCL/DDP path that a one-GPU machine can run; torchrun with two ranks is CPU-tested
    (tests/test_distributed.py)."""
    # zoo's harness imports torch: here, not at the top, so that the summary needs neither
    import torch

    from zoo.runs.config import TrainConfig
    from zoo.runs.device import resolve_device
    from zoo.tasks.kinds import task_for
    from zoo.train import distributed
    from zoo.train.trainer import make_optimizer

    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", 0)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0",
                      WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    result: dict = {"device": str(dev), "world_size": 1}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out, distributed.process_group(dev):
        result["backend"] = str(torch.distributed.get_backend())
        for arch in ("vit", "resnet"):
            config = TrainConfig.for_arch(arch, dataset="digits", batch_size=64,
                                          train_subset=256)
            task = task_for(config, dev, out=out, show_progress=False)
            model = distributed.sync_batchnorm(task.build().to(dev), dev)
            step_model = distributed.wrap(model, dev)
            optimizer = make_optimizer(model, config)
            losses = []
            for _, (xb, yb) in zip(range(steps), task.train_batches().epoch(0)):
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    loss = task.loss(step_model(xb), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            result[arch] = {
                "losses": [round(v, 5) for v in losses],
                "finite": len(losses) == steps and all(math.isfinite(v) for v in losses),
                "ddp": type(step_model).__name__,
                "sync_batchnorm": any(isinstance(m, torch.nn.SyncBatchNorm)
                                      for m in model.modules())}
        t = torch.arange(4.0, device=dev)
        torch.distributed.all_reduce(t)
        result["all_reduce"] = t.tolist() == [0.0, 1.0, 2.0, 3.0]
        box = [{"from": "rank 0"}]
        torch.distributed.broadcast_object_list(box, src=0)
        result["broadcast"] = box[0] == {"from": "rank 0"}
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["ok"] = (result["vit"]["finite"] and result["resnet"]["finite"]
                    and result["all_reduce"] and result["broadcast"]
                    and result["backend"] == ("nccl" if dev.type == "cuda" else "gloo"))
    if path is not None:
        path.write_text(json.dumps(result, indent=2) + "\n")
    return result


# --- the dry run -------------------------------------------------------------------------------

class Failed(Exception):
    pass


def read_spec(path: Path) -> list[tuple[str, str, list[str]]]:
    spec = []
    for line in _lines(path):
        name, kind, *args = line.split("\t")
        spec.append((name, kind, args))
    return spec


def cuda_gated_tests(tests: Path) -> set[str]:
    """`file::function` of every test that skips without a CUDA device: a skipif decorator (or
    a mark bound to a name, or `pytestmark`) whose condition negates CUDA availability, or a
    body that starts `if not <CUDA available>: pytest.skip(...)`. Names like `GPU` bound at
    module level to an expression with `cuda.is_available` count as CUDA availability."""
    found = set()
    for path in sorted(tests.glob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        cuda_names = set()
        marks = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name):
                source = ast.unparse(node.value)
                if "cuda.is_available" in source:
                    cuda_names.add(node.targets[0].id)
                marks[node.targets[0].id] = node.value

        def about_cuda(expr) -> bool:
            source = ast.unparse(expr)
            return "cuda.is_available" in source or any(
                re.search(rf"\b{re.escape(n)}\b", source) for n in cuda_names)

        def negated_cuda(expr) -> bool:
            if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not):
                return about_cuda(expr.operand)
            if isinstance(expr, ast.BoolOp) and isinstance(expr.op, ast.Or):
                return any(negated_cuda(v) for v in expr.values)
            return False

        def cuda_skipif(decorator) -> bool:
            if isinstance(decorator, ast.Name) and decorator.id in marks:
                decorator = marks[decorator.id]
            return (isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith(
                "mark.skipif") and bool(decorator.args) and negated_cuda(decorator.args[0]))

        module_gated = any(
            isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark"
                                                 for t in node.targets)
            and any(cuda_skipif(d) for d in (node.value.elts if isinstance(
                node.value, (ast.List, ast.Tuple)) else [node.value]))
            for node in tree.body)
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test"):
                continue
            gated = module_gated or any(cuda_skipif(d) for d in node.decorator_list)
            for statement in node.body:
                if isinstance(statement, ast.If) and negated_cuda(statement.test) and \
                        "skip" in ast.unparse(statement.body[0]):
                    gated = True
            if gated:
                found.add(f"{path.parent.name}/{path.name}::{node.name}")
    return found


def dry_check(root: Path, repo: Path) -> int:
    """Every step's command, checked without a GPU; one line per step in checks/NAME.txt."""
    meta_dir = root / "detail" / "run" / "meta"
    spec = read_spec(meta_dir / "spec.tsv")
    checks = meta_dir / "checks"
    checks.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[str]] = {}  # step name: what is wrong with it

    os.chdir(repo)
    started = time.perf_counter()
    pytest_steps = [(name, args) for name, kind, args in spec if kind == "pytest"]
    check_pytest_steps(repo, pytest_steps, results, checks, started)

    import torch

    torch.set_num_threads(1)  # the dry run runs beside other work: one core is plenty
    work = Path(tempfile.mkdtemp(prefix="zoo-gpu-dry-"))
    for name, kind, args in spec:
        if kind == "pytest":
            continue
        problems = results.setdefault(name, [])
        t0 = time.perf_counter()
        failures = len(problems)
        try:
            check_command(repo, kind, args, work / name)
        except Failed as exc:
            problems.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - rot of any kind is the finding
            problems.append(f"{type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}")
        verdict = "ok" if len(problems) == failures else problems[-1]
        print(f"dry check: {name}: {' '.join(args[:3])}...: {verdict} "
              f"({time.perf_counter() - t0:.1f}s)", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    for name, messages in results.items():
        (checks / f"{name}.txt").write_text(
            ("fail\t" + "; ".join(messages)) if messages else "ok\t")
    bad = {n: m for n, m in results.items() if m}
    print(f"dry check: {len(results) - len(bad)} of {len(results)} steps ok in "
          f"{time.perf_counter() - started:.1f}s")
    return 1 if bad else 0


def check_pytest_steps(repo: Path, pytest_steps, results: dict[str, list[str]], checks: Path,
                       started: float) -> None:
    """The parity selections: every node id names a test that pytest collects, and together
    they select exactly the tests that skip without CUDA. Adds to `results`; writes each
    step's test count to checks/NAME.count."""

    def fail(name: str, message: str) -> None:
        results.setdefault(name, []).append(message)

    for name, args in pytest_steps:  # a name that is gone: said precisely, and left out below
        for nodeid in list(args):
            problem = missing_test(repo, nodeid)
            if problem:
                fail(name, problem)
                args.remove(nodeid)
    try:
        counts = collect(repo, pytest_steps)
        for name, args in pytest_steps:
            results.setdefault(name, [])
            for nodeid in args:
                if counts.get(nodeid, 0) == 0:
                    fail(name, f"pytest collects nothing for {nodeid}")
        gated = cuda_gated_tests(repo / "tests")
        selected = {nodeid.split("[")[0] for _, args in pytest_steps for nodeid in args}

        def owner(test: str) -> str:  # the step that selects from the same file, or the first
            file = test.split("::")[0]
            return next((name for name, args in pytest_steps
                         if any(a.split("::")[0] == file for a in args)),
                        pytest_steps[0][0] if pytest_steps else "setup")

        for test in sorted(gated - selected):
            fail(owner(test), f"CUDA-only test {test} is in no parity step of gpu_acceptance.sh")
        for test in sorted(selected - gated):
            fail(owner(test), f"parity step selects {test}, which does not skip without CUDA")
        print(f"dry check: pytest: {sum(counts.values())} tests collected "
              f"({', '.join(f'{n}: {sum(counts.get(a, 0) for a in args)}' for n, args in pytest_steps)}); "
              f"{len(gated)} CUDA-only test functions found ({time.perf_counter() - started:.1f}s)")
        for name, args in pytest_steps:
            (checks / f"{name}.count").write_text(str(sum(counts.get(a, 0) for a in args)))
    except Failed as exc:
        for name, _ in pytest_steps:
            fail(name, str(exc))


def check_command(repo: Path, kind: str, args: list[str], work: Path) -> None:
    """One non-pytest step's command, by its kind in spec.tsv; raises on a problem."""
    if kind == "zoo":
        check_zoo(args, work)
    elif kind == "zoo-compile":
        check_zoo(args, work)
        import torch._dynamo

        if not any(hasattr(torch._dynamo.config, key)
                   for key in ("recompile_limit", "cache_size_limit")):
            raise Failed("torch._dynamo.config has neither recompile_limit nor "
                         "cache_size_limit (the compile step raises it)")
    elif kind == "train":
        check_train(args)
    elif kind == "ratio":
        check_ratio(repo, args)
    elif kind == "ddp":
        result = ddp(None, device="cpu", steps=1)
        if not result["ok"]:
            raise Failed(f"the DDP path failed on the CPU (gloo): {result}")
    else:
        raise Failed(f"unknown step kind {kind!r} in the spec")


def missing_test(repo: Path, nodeid: str) -> str | None:
    """Why `file::function` names no test, or None."""
    file, _, function = nodeid.partition("::")
    path = repo / file
    if not path.is_file():
        return f"{nodeid}: no file {file}"
    names = {node.name for node in ast.parse(path.read_text()).body
             if isinstance(node, ast.FunctionDef)}
    if function.split("[")[0] not in names:
        return f"{nodeid}: {file} has no test function {function.split('[')[0]}"
    return None


def collect(repo: Path, pytest_steps) -> dict[str, int]:
    """How many tests pytest collects for each node id (one in-process collection)."""
    import pytest

    nodeids = [a for _, args in pytest_steps for a in args]

    class Collector:
        items: list[str] = []

        def pytest_collection_finish(self, session):
            Collector.items = [item.nodeid for item in session.items]

    code = pytest.main(["--collect-only", "-qq", "-p", "no:cacheprovider", "--rootdir",
                        str(repo), *nodeids], plugins=[Collector()])
    if code not in (0, 5):
        raise Failed(f"pytest --collect-only of the parity selections exits {int(code)} "
                     "(a test file or name is gone or does not import)")
    return {nodeid: sum(1 for item in Collector.items
                        if item == nodeid or item.startswith(nodeid + "["))
            for nodeid in nodeids}


def run_zoo_cli(argv: list[str]) -> None:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = zoo_cli.main(argv)
        except SystemExit as exc:  # argparse --help and the like
            code = exc.code
    if code not in (0, None):
        raise Failed(f"`zoo {' '.join(argv)}` exits {code}: {stderr.getvalue().strip()[:300]}")


def check_zoo(argv: list[str], work: Path) -> None:
    """`zoo ARGV` through zoo.cli.main, with the measurement swapped for a tiny CPU one: the
    same parsing, the same board path and renderer, and the board read back."""
    from zoo.tools import kernel_bench, quant_bench  # torch; their measurement is swapped

    work.mkdir(parents=True, exist_ok=True)
    seen: dict = {}
    real_kernels, real_quant, real_env = (kernel_bench.bench_kernels, quant_bench.bench_quant,
                                          quant_bench.quant_bench_environment)

    def tiny_kernels(names=None, numel=None, dtype=None, device="auto", compile=False,
                     out=None, **_):
        seen.update(target="kernels", device=device, compile=compile, out=out)
        return real_kernels(["relu", "rational"], numel=1024, device="cpu", compile=False,
                            min_run_time=0.001, out=out)

    def tiny_quant(formats=None, numel=None, device="auto", dtype=None, **_):
        seen.update(target="quant", device=device)
        few = dict(list(quant_bench.DEFAULT_FORMATS.items())[:2])
        return real_quant(few, numel=4096, device="cpu", min_run_time=0.001)

    cwd = os.getcwd()
    os.chdir(work)
    try:
        with mock.patch.object(kernel_bench, "bench_kernels", tiny_kernels), \
                mock.patch.object(quant_bench, "bench_quant", tiny_quant), \
                mock.patch.object(quant_bench, "quant_bench_environment",
                                  lambda device="auto": real_env("cpu")):
            run_zoo_cli(argv)
    finally:
        os.chdir(cwd)
    if "--help" in argv:
        return
    board = {"kernels": "leaderboards/kernels.md", "quant": "leaderboards/quant-kernels.md"}
    target = seen.get("target")
    if target is None:
        raise Failed(f"`zoo {' '.join(argv)}` ran no benchmark")
    path = work / board[target]
    if not path.is_file():
        raise Failed(f"`zoo {' '.join(argv)}` wrote no {board[target]} (the script copies it "
                     "from there)")
    if "--compile" in argv and not seen.get("compile"):
        raise Failed("--compile did not reach bench_kernels")
    parsed = kernel_board(path) if target == "kernels" else quant_board(path)
    if not parsed["copy_gbps"]:
        raise Failed(f"{board[target]}: no copy bandwidth in its 'Measured on' line")


def check_train(argv: list[str]) -> None:
    """`zoo train ARGV` through zoo.cli.main up to the Trainer: the same parsing and config
    validation; the Trainer is swapped for one that stops there."""
    from zoo.tasks import kinds  # torch; the Trainer it starts is swapped

    # A BaseException, like KeyboardInterrupt: the CLI's guard turns every Exception into
    # one line and exit 1, and this one must pass it to say "the Trainer was reached".
    class Stop(BaseException):
        pass

    class Validated:
        def __init__(self, config, **_):
            config.validate()

        def run(self):
            raise Stop

    with mock.patch.object(kinds, "Trainer", Validated):
        try:
            run_zoo_cli(argv)
        except Stop:
            return
    raise Failed(f"`zoo {' '.join(argv)}` did not reach the Trainer")


def check_ratio(repo: Path, args: list[str]) -> None:
    path = repo / "benchmarks" / "gpu_step_ratio.py"
    spec = importlib.util.spec_from_file_location("gpu_step_ratio", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The step's exact arguments, then --check on the CPU (later flags win): they parse, and
    # both models build and take a finite step for every shape.
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            code = module.main([*args, "--check", "--device", "cpu"])
        except SystemExit as exc:
            code = exc.code
    if code not in (0, None):
        raise Failed(f"gpu_step_ratio.py {' '.join(args)} --check exits {code}")


# --- entry ------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("summary")
    p.add_argument("root", type=Path)
    p.add_argument("--final", action="store_true")
    p.add_argument("--print", action="store_true")
    p = sub.add_parser("junit")
    p.add_argument("file", type=Path)
    p = sub.add_parser("device")
    p.add_argument("file", type=Path)
    p = sub.add_parser("ddp")
    p.add_argument("file", type=Path)
    p.add_argument("--device", default="cuda")
    p = sub.add_parser("smoke")
    p.add_argument("dir", type=Path)
    p.add_argument("archs", nargs="+")
    p = sub.add_parser("dry-check")
    p.add_argument("root", type=Path)
    p.add_argument("repo", type=Path)
    p = sub.add_parser("verdict")
    p.add_argument("summary", type=Path)
    return parser


def print_junit(file: Path) -> int:
    counts = junit_counts(file)
    if counts is None:
        print(f"no junit XML at {file}")
        return 1
    print(f"{counts['passed']} passed, {counts['failures']} failed, {counts['errors']} "
          f"errors, {counts['skipped']} skipped of {counts['tests']}")
    for case in counts["not_passed"][:10]:
        print(f"  {case['kind']}: {case['test']}: {case['message']}")
    bad = counts["failures"] or counts["errors"] or counts["skipped"] or not counts["tests"]
    return 1 if bad else 0


def print_smoke(root: Path, archs: list[str]) -> int:
    verdicts = smoke_verdicts(root, archs)
    for arch, v in verdicts.items():
        print(f"{arch}: {'ok' if v['ok'] else 'FAILED'}; resumed {v['resumed']}, already "
              f"completed {v['already_completed']}, losses {v['losses']}"
              + (f"; {'; '.join(v['problems'])}" if v["problems"] else ""))
    return 0 if all(v["ok"] for v in verdicts.values()) else 1


def verdict(path: Path) -> str:
    """The run's last word, from summary.json: "ok", or the first reason it is not."""
    s = json.loads(path.read_text())
    bad = [x for x in s["steps"] if x["status"] not in ("passed", "checked", "skipped")]
    skipped = [x for x in s["steps"] if x["status"] == "skipped"]
    if bad:
        return "FAILED: " + bad[0]["name"] + ": " + str(bad[0]["note"] or bad[0]["status"])
    if s["mode"] == "dry-run" and skipped:
        return "FAILED: " + skipped[0]["name"] + ": skipped in the dry run"
    if s["mode"] == "run" and (skipped or not s["all_targets_met"]):
        parts = []
        if skipped:
            names = ",".join(x["name"] for x in skipped)
            parts.append(f"skipped: {names} (run them with --steps {names})")
        missed = [t["name"] for t in s["targets"] if t["met"] is False]
        unmeasured = [t["name"] for t in s["targets"] if t["met"] is None]
        if missed:
            parts.append("targets not met: " + ", ".join(missed))
        if unmeasured:
            parts.append("not measured: " + ", ".join(unmeasured))
        return "; ".join(parts)
    return "ok"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "summary":
        summary = write_summary(args.root.resolve(), final=args.final)
        if args.print:
            print_summary(summary)
        return 0
    if args.command == "junit":
        return print_junit(args.file)
    if args.command == "device":
        return device_info(args.file)
    if args.command == "ddp":
        result = ddp(args.file, device=args.device)
        print(json.dumps(result))
        return 0 if result["ok"] else 1
    if args.command == "smoke":
        return print_smoke(args.dir, args.archs)
    if args.command == "dry-check":
        return dry_check(args.root.resolve(), args.repo.resolve())
    if args.command == "verdict":
        print(verdict(args.summary))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
