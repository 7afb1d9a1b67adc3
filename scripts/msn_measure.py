"""The measurement stage of scripts/msn_smollm2.sh: models of one architecture (the target, the control and
the MSN fine-tune) measured alike, speed and quality.

    python scripts/msn_measure.py OUT/measure --models target=T,control=C,msn=M \\
      --suites mt-bench-mix,gsm,grounded,humaneval --limit 8 --max-new-tokens 96 --windows 1,2,3,4 \\
      --gsm-limit 100 --gsm-new 256 --exclude DATA --heldout OUT/msn --answers mt-bench-mix:4,gsm:2,grounded:2,humaneval:2

Writes into the folder (each file atomically, and skipped when it exists, so a rerun resumes):
  bench/MODEL-SUITE.json  per model and suite, the records `specjax bench --prompts SUITE --limit N --chat
                          --modes ar,jacobi,tr-jacobi --window W1,W2,.. --temperature 0` writes: greedy,
                          batch 1, each Jacobi window and TR-Jacobi beside `ar` of the same model, with the
                          per-prompt figures the report resamples
  gsm/MODEL.json          `specjax eval-gsm`'s record: exact-match accuracy on held-out gsm_symbolic problems,
                          problems equal to a training prompt of --exclude dropped
  answers.json            `specjax side-by-side`'s record: every model's greedy answer to the fixed prompts
  heldout.json            per model, the clean held-out loss on the rows the training run in --heldout kept
                          out (`specjax.train.msn.held_out_loss`; the start model included, which msn-train
                          never evaluates)

One process and one Engine, its parameters swapped per model: the models share their shapes, so each
decoder compiles once for all of them (compile time is excluded from tokens/s either way). Suites are the
outer loop, so the models of one suite are timed close together.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from specjax.errors import SpecjaxError

MODES = ("ar", "jacobi", "tr-jacobi")


def parse_models(text: str) -> dict[str, str]:
  """`name=CKPT,name=CKPT` in order; names distinct, of letters, digits and _ (bench files are
  MODEL-SUITE.json, split at the first -)."""
  out: dict[str, str] = {}
  for item in (x.strip() for x in text.split(",") if x.strip()):
    name, eq, path = item.partition("=")
    if not eq or not path or not name.replace("_", "").isalnum() or name in out:
      raise SpecjaxError(f"--models takes distinct name=CKPT items (name: letters, digits and _), got {item!r}")
    out[name] = path
  if not out:
    raise SpecjaxError("--models names no model")
  return out


class Models:
  """One Engine for models of one shape: `use(name)` swaps its parameters (checked to fit) in."""

  def __init__(self, models: dict[str, str]):
    self.paths, self.engine, self.tokenizer, self._first, self._current = models, None, None, None, None

  def use(self, name: str):
    from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer
    from specjax.decode.text import load_engine

    path = self.paths[name]
    if self.engine is None:
      self.engine, self.tokenizer = load_engine(path)
      self._first, self._current = load_checkpoint(path).config, name
    elif self._current != name:
      ckpt = load_checkpoint(path)
      if ckpt.config.replace(dtype=self._first.dtype) != self._first:
        raise SpecjaxError(f"{path} has another architecture than {self.paths[next(iter(self.paths))]}")
      if load_tokenizer(path).get_vocab() != self.tokenizer.get_vocab():
        raise SpecjaxError(f"{path} has another tokenizer than {self.paths[next(iter(self.paths))]}")
      self.engine.set_params(ckpt.params)
      self._current = name
    return self.engine, self.tokenizer


def _write(path: Path, record) -> None:
  from specjax.fileio import atomic_write_text

  path.parent.mkdir(parents=True, exist_ok=True)
  atomic_write_text(path, json.dumps(record, indent=1) + "\n")
  print(f"wrote {path}", flush=True)


def measure(args: argparse.Namespace) -> None:
  from specjax.decode.text import encode, greedy_answers
  from specjax.eval.bench import bench
  from specjax.eval.gsm import eval_gsm, gsm_problems
  from specjax.prompts.suites import load_prompts

  out = Path(args.out)
  models = parse_models(args.models)
  windows = [int(w) for w in args.windows.split(",") if w.strip()]
  if not windows or min(windows) < 1:
    raise SpecjaxError(f"--windows needs Jacobi windows >= 1, got {args.windows!r}")
  for path in models.values():
    if not Path(path).is_dir():
      raise SpecjaxError(f"model {path} does not exist")
  pool = Models(models)
  log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731

  if args.heldout and not (out / "heldout.json").is_file():
    from specjax.train.distill import DistillDataConfig
    from specjax.train.msn import held_out_loss

    run_config = Path(args.heldout) / "run_config.json"
    if not run_config.is_file():
      raise SpecjaxError(f"{run_config} is missing; --heldout takes an msn-train run folder")
    saved = json.loads(run_config.read_text())
    data, dtype = DistillDataConfig(**saved["data"]), saved.get("dtype", "auto")  # the run's held-out rows and dtype
    losses = {n: held_out_loss(p, data, dtype=dtype) for n, p in models.items()}
    _write(out / "heldout.json", {"run": args.heldout, "dtype": dtype, **losses})

  for suite in [s for s in args.suites.split(",") if s.strip()]:
    texts = None
    for name in models:
      path = out / "bench" / f"{name}-{suite}.json"
      if path.is_file():
        continue
      texts = texts if texts is not None else load_prompts(suite)[: args.limit]
      engine, tok = pool.use(name)
      log(f"--- bench {name} on {suite} ({len(texts)} prompts)")
      records = bench(
        engine, encode(tok, texts, chat=True), list(MODES), [0.0], [1], args.max_new_tokens,
        sweeps={"window": windows}, log=log,
      )  # fmt: skip
      _write(path, records)

  if args.gsm_limit > 0:
    problems = None
    for name in models:
      path = out / "gsm" / f"{name}.json"
      if path.is_file():
        continue
      if problems is None:
        exclude = load_prompts(args.exclude) if args.exclude else []
        problems = gsm_problems(args.gsm_limit, exclude=exclude)
      engine, tok = pool.use(name)
      log(f"--- GSM accuracy of {name} ({args.gsm_limit} problems)")
      result = eval_gsm(engine, tok, problems[0], args.gsm_new, batch_size=args.gsm_batch, excluded=problems[1])
      _write(path, {"target": models[name], "exclude": args.exclude, **result})

  if args.answers and not (out / "answers.json").is_file():
    texts = load_prompts(args.answers)
    answers = {name: greedy_answers(*pool.use(name), texts, args.answers_new) for name in models}
    rows = [{"prompt": t, **{n: answers[n][i] for n in models}} for i, t in enumerate(texts)]
    record = {"models": models, "max_new_tokens": args.answers_new, "decoding": "greedy ar, chat template"}
    _write(out / "answers.json", {**record, "prompts": rows})


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("out", help="the measurement folder")
  p.add_argument("--models", required=True, help="name=CKPT,name=CKPT,... (one architecture)")
  p.add_argument("--suites", default="mt-bench-mix,gsm,grounded,humaneval", help="comma list of prompt suites")
  p.add_argument("--limit", type=int, default=8, help="the first N prompts of each suite")
  p.add_argument("--max-new-tokens", type=int, default=96)
  p.add_argument("--windows", default="1,2,3,4", help="Jacobi windows")
  p.add_argument("--gsm-limit", type=int, default=100, help="held-out GSM problems (0: no GSM accuracy)")
  p.add_argument("--gsm-new", type=int, default=256, help="GSM answer budget (tokens)")
  p.add_argument("--gsm-batch", type=int, default=8)
  p.add_argument("--exclude", help="the training prompts (a make-data folder): never evaluated on")
  p.add_argument("--heldout", help="an msn-train run folder: its held-out rows give every model's clean loss")
  p.add_argument("--answers", help="prompt spec of the fixed prompts answered side by side (e.g. mt-bench-mix:10)")
  p.add_argument("--answers-new", type=int, default=128)
  args = p.parse_args(argv)
  try:
    measure(args)
  except SpecjaxError as e:
    print(f"msn_measure: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
