"""Run by ``tests/test_old_stack.py`` under RewardBench's own stack (a second venv: transformers 4.51, the
released ``rewardbench`` 0.1.4 installed without its dependencies), never imported by rewardkit.

Reads ``{"model", "rows": [{"prompt": messages, "response"}], "subset_accuracy": {subset: acc}}`` as JSON
on stdin and prints ``{"transformers", "rewards", "sections"}``:

- ``rewards``: each row scored as RewardBench 0.1.4 scores a classifier (``rewardbench/rewardbench.py``
  and ``utils.prepare_dialogue_from_tokenizer``: the model's chat template over prompt + response,
  tokenized with special tokens, left-padded batches, no truncation, ``logits[:, 0]``);
- ``sections``: ``rewardbench.utils.calculate_scores_per_section`` with the released
  ``EXAMPLE_COUNTS`` and ``SUBSET_MAPPING`` over the given per-subset accuracies. The two are read from
  the installed package's files, because importing ``rewardbench`` pulls fschat, wandb and vLLM-era
  dependencies that the arithmetic does not use.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path


def rewardbench_arithmetic():
    spec = importlib.util.find_spec("rewardbench")
    root = Path(spec.submodule_search_locations[0])
    constants = importlib.util.spec_from_file_location("rb_constants", root / "constants.py")
    module = importlib.util.module_from_spec(constants)
    constants.loader.exec_module(module)
    tree = ast.parse((root / "utils.py").read_text())
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "calculate_scores_per_section")
    namespace: dict = {}
    exec(compile(ast.Module(body=[func], type_ignores=[]), str(root / "utils.py"), "exec"), namespace)
    return namespace["calculate_scores_per_section"], module.EXAMPLE_COUNTS, module.SUBSET_MAPPING


def main() -> None:
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    job = json.load(sys.stdin)
    tok = AutoTokenizer.from_pretrained(job["model"])
    model = AutoModelForSequenceClassification.from_pretrained(job["model"], torch_dtype=torch.float32).eval()
    tok.padding_side = "left"
    texts = [tok.apply_chat_template(list(r["prompt"]) + [{"role": "assistant", "content": r["response"]}],
                                     tokenize=False) for r in job["rows"]]
    rewards = []
    for k in range(0, len(texts), 8):
        inputs = tok(texts[k:k + 8], truncation=False, padding=True, return_tensors="pt", return_token_type_ids=False)
        with torch.no_grad():
            rewards += model(**inputs).logits[:, 0].tolist()
    calculate, counts, mapping = rewardbench_arithmetic()
    sections = calculate(counts, mapping, job.get("subset_accuracy") or {})
    print(json.dumps({"transformers": transformers.__version__, "rope_theta": getattr(model.config, "rope_theta", None),
                      "tokenizer_class": type(tok).__name__, "rewards": rewards, "sections": sections}))


if __name__ == "__main__":
    main()
