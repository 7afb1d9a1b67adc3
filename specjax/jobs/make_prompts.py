"""Training prompts written by the target itself (`specjax make-prompts`), in the manner of Magpie (Xu et al. 2024).

    make_prompts(target="ckpt/smollm2", out="data/self.jsonl", num_prompts=1000)
    make_data(target="ckpt/smollm2", prompts="data/self.jsonl,gsm:200", out="data/distill")

A chat-tuned model given only the opening of a user turn of its chat template (for ChatML:
`<|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\n`) writes a user request, drawn from the
requests it was fine-tuned to answer: advice, writing, role-play, explanations, maths, code. A drafter
must match the target on what users ask, and the offline sources (chatterbot greetings, standard-library
docs, GSM templates) cover little of that; the target's own requests cover it without any download.

Each round samples `round_size` continuations of that opening with the compiled batched sampler (the same
`target_sampler` as make-data). A continuation is kept when it ended with the end-of-turn token (an
unfinished one is usually a runaway), has at least `min_words` words, is not a repeat (normalised text,
`sources.prompt_hash`) and, with `check_eval`, is not a prompt of an evaluation suite (such a prompt is
dropped and counted, so the output always passes make-data's disjointness check).

With `openings` (`INSTRUCTION_OPENINGS`, or a list of your own), the template's opening is followed by
the first words of a request, one opening per continuation in turn: the target then writes imperative
instructions ("Write ...", "Explain ...") as well as the questions ("Can you ...", "I'm ...") that most
of its unsteered requests start with. A kept request is the opening followed by its continuation.

The output is a JSONL file, one `{"prompt": ...}` per line: a prompt source for `make-data`. Rounds are
appended to the work folder `.<out name>.partial/` as they finish; rerunning the same command resumes
after the last finished round (round r's seed depends only on the seed and r, so a resumed run writes
exactly the prompts an uninterrupted one would). Other settings are refused rather than mixed; every setting
is checked before anything is written, so a corrected rerun is not refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from specjax.errors import SpecjaxError
from specjax.fileio import atomic_write_text, refuse_existing
from specjax.jobs.make_data import Generate, check_sampling, end_ids, target_sampler

_SENTINEL = "\u2063specjax-user-turn\u2063"

# Common openings of instructions, most of them among the commonest root verbs of Self-Instruct's
# instructions (Wang et al. 2023, Fig. 2): a generic list, not taken from an evaluation suite.
INSTRUCTION_OPENINGS = (
  "Write",
  "Explain",
  "Describe",
  "Create",
  "Give",
  "Generate",
  "Find",
  "Identify",
  "Design",
  "Tell me",
  "Suggest",
  "Compose",
  "Summarize",
  "Compare",
  "Imagine",
  "Plan",
  "Rewrite",
  "List",
  "Classify",
  "Help me",
)


def user_prefix(tokenizer, system: str | None = None) -> str:
  """The chat template's text up to where a user's first message starts (default system turn included)."""
  if not getattr(tokenizer, "chat_template", None):
    raise SpecjaxError("the tokenizer has no chat template; the target cannot be asked to write user turns")
  messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": _SENTINEL}]
  text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
  if _SENTINEL not in text:
    raise SpecjaxError("the chat template does not show the user's message verbatim; cannot find where it starts")
  return text[: text.index(_SENTINEL)]


def _round_seed(seed: int, r: int) -> int:
  return int.from_bytes(hashlib.sha256(f"make-prompts:{seed}:{r}".encode()).digest()[:4], "little") >> 1


def _read_kept(path: Path) -> list[str]:
  from specjax.prompts.sources import dedupe

  if not path.exists():
    return []
  lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
  return dedupe(json.loads(ln)["prompt"] for ln in lines)  # a round appended before a crash repeats on resume


def make_prompts(
  target: str | os.PathLike,
  out: str | os.PathLike,
  num_prompts: int,
  *,
  temperature: float = 1.0,
  top_p: float = 1.0,
  max_new_tokens: int = 128,
  batch_size: int = 32,
  round_size: int = 256,
  min_words: int = 3,
  seed: int = 0,
  system: str | None = None,
  check_eval: bool = True,
  openings: Sequence[str] | None = None,
  max_rounds: int | None = None,
  generate: Generate | None = None,
) -> Path:
  """Have the target write `num_prompts` distinct user requests into the JSONL file `out`.

  Args:
    target: the target's specjax checkpoint folder (with a chat-templated tokenizer).
    out: the JSONL file to create (must not exist).
    num_prompts: prompts to keep.
    temperature, top_p: sampling settings (Magpie samples at temperature 1, no nucleus cut).
    max_new_tokens: longest request; longer continuations are dropped as unfinished.
    batch_size: rows per compiled sampler call.
    round_size: continuations per round (the resume granularity).
    min_words: shorter requests are dropped.
    seed: sampling seed.
    system: a system message for the template (default: the template's own default, if any).
    check_eval: drop requests that are prompts of an evaluation suite.
    openings: first words of the requests, one per continuation in turn (`INSTRUCTION_OPENINGS`, or
      your own); None lets the target choose (plain Magpie).
    max_rounds: give up after this many rounds (default: enough for a 5% keep rate).
    generate: replaces the compiled sampler (`fn(prompt_ids, seed) -> generated ids per prompt`).

  Returns:
    `out`.
  """
  from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer
  from specjax.prompts.sources import normalize, prompt_hash
  from specjax.prompts.suites import eval_prompts

  out = refuse_existing(out)
  for name, v in (
    ("num_prompts", num_prompts),
    ("max_new_tokens", max_new_tokens),
    ("batch_size", batch_size),
    ("round_size", round_size),
  ):
    if v < 1:
      raise SpecjaxError(f"{name} must be >= 1, got {v}")
  openings = None if openings is None else [str(o).strip() for o in openings]
  if openings is not None and (not openings or not all(openings)):
    raise SpecjaxError("openings must be a non-empty list of non-empty strings")
  if max_rounds is not None and max_rounds < 1:
    raise SpecjaxError(f"max_rounds must be >= 1, got {max_rounds}")
  max_rounds = max_rounds or -(-20 * num_prompts // round_size) + 1
  ckpt = load_checkpoint(target)
  tokenizer = load_tokenizer(target)
  head = user_prefix(tokenizer, system)
  leads = openings or [""]  # what each continuation is given after the user-turn opening, in turn
  starts_ids = [tokenizer(head + lead, add_special_tokens=False)["input_ids"] for lead in leads]
  check_sampling(ckpt, starts_ids, temperature, top_p, max_new_tokens, batch_size, fix="lower --max-new-tokens")
  eos_ids = end_ids(ckpt, tokenizer)
  eval_hashes = {prompt_hash(p) for p in eval_prompts()} if check_eval else set()

  settings = {
    "target": str(Path(target).resolve()),
    "num_prompts": num_prompts,
    "temperature": temperature,
    "top_p": top_p,
    "max_new_tokens": max_new_tokens,
    "batch_size": batch_size,
    "round_size": round_size,
    "min_words": min_words,
    "seed": seed,
    "system": system,
    "check_eval": check_eval,
    "openings": openings,
  }
  work = out.parent / f".{out.name}.partial"
  work.mkdir(parents=True, exist_ok=True)
  meta_path, kept_path = work / "meta.json", work / "prompts.jsonl"
  meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"settings": settings, "rounds": 0}
  if meta["settings"] != json.loads(json.dumps(settings)):
    raise SpecjaxError(
      f"{work} holds an unfinished make-prompts run with other settings; rerun with the same settings to resume, "
      "or delete that folder"
    )
  kept = _read_kept(kept_path)
  seen = {prompt_hash(p) for p in kept}
  if generate is None:
    generate = target_sampler(
      ckpt, tokenizer, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
  t0, tokens = time.perf_counter(), 0
  while len(kept) < num_prompts:
    r = meta["rounds"]
    if r >= max_rounds:
      raise SpecjaxError(
        f"make-prompts kept {len(kept)} of {num_prompts} prompts in {r} rounds of {round_size}; the target rarely "
        f"ends a user turn within {max_new_tokens} tokens. Raise max_new_tokens or max_rounds (the kept prompts "
        f"are in {work}; the same command with the new limits resumes)"
      )
    new, unfinished, short, repeats, in_eval = [], 0, 0, 0, 0
    first = r * round_size  # continuation i of round r starts with lead (first + i) mod len
    which = [(first + i) % len(leads) for i in range(round_size)]
    for w, g in zip(which, generate([starts_ids[w] for w in which], _round_seed(seed, r)), strict=True):
      tokens += len(g)
      if not g or int(g[-1]) not in eos_ids:
        unfinished += 1
        continue
      text = tokenizer.decode([int(t) for t in g[:-1]], skip_special_tokens=True)
      text = (leads[w] + text).strip()
      h = prompt_hash(text)
      if len(normalize(text).split()) < min_words:
        short += 1
      elif h in eval_hashes:
        in_eval += 1
      elif h in seen:
        repeats += 1
      else:
        seen.add(h)
        new.append(text)
    with open(kept_path, "a", encoding="utf-8") as f:
      f.writelines(json.dumps({"prompt": p}, ensure_ascii=False) + "\n" for p in new)
      f.flush()
      os.fsync(f.fileno())
    meta["rounds"] = r + 1
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    kept.extend(new)
    dt = max(time.perf_counter() - t0 - getattr(generate, "compile_s", 0.0), 1e-9)
    print(
      f"make-prompts: round {r + 1}: kept {len(new)}/{round_size} (unfinished {unfinished}, short {short}, "
      f"repeats {repeats}, in an eval suite {in_eval}); {min(len(kept), num_prompts)}/{num_prompts} prompts, "
      f"{tokens / dt:.1f} tokens/s",
      file=sys.stderr,
      flush=True,
    )
  atomic_write_text(out, "".join(json.dumps({"prompt": p}, ensure_ascii=False) + "\n" for p in kept[:num_prompts]))
  shutil.rmtree(work, ignore_errors=True)
  print(f"make-prompts: wrote {num_prompts} prompts to {out}", file=sys.stderr)
  return out
