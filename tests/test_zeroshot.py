"""owl.zeroshot against a direct log-likelihood computation, on the local zero-shot mirror.

A tiny random LLaMA and a byte-level BPE tokenizer trained here (no download) are evaluated through
lm-eval on a few rows of mirrored tasks; the accuracies must equal an argmax over summed answer
log-likelihoods computed with the model directly from lm-eval's own context / choice strings.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
import torch

from owl.errors import OwlError
from owl.zeroshot import (
    DEFAULT_TASKS,
    PAPER_METRIC,
    _scored_logits_lm_class,
    evaluate_zero_shot,
    load_tasks,
    logits_to_keep,
    scored_start_bounds,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
LIMIT = 10
CHECKED_TASKS = ["rte", "arc_easy", "winogrande"]  # plain, acc_norm, and multiple-context tasks


def _data_dir() -> Path | None:
    for candidate in (os.environ.get("OWL_DATA_DIR"), REPO_ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "zeroshot").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def data_dir() -> Path:
    found = _data_dir()
    if found is None:
        pytest.skip("no zero-shot mirror: set OWL_DATA_DIR or provide ../shared/data/zeroshot")
    for task in CHECKED_TASKS:
        if not any((found / "zeroshot" / task).glob("*.jsonl")):
            pytest.skip(f"the zero-shot mirror has no {task}")
    return found


@pytest.fixture(scope="module")
def tokenizer(data_dir):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    lines: list[str] = []
    for task in CHECKED_TASKS:
        for path in sorted((data_dir / "zeroshot" / task).glob("*.jsonl")):
            with open(path, encoding="utf-8") as fh:
                for line in itertools.islice(fh, 150):
                    lines.append(" ".join(str(v) for v in json.loads(line).values()))
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384, special_tokens=["<eos>", "<bos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(lines, trainer)
    # adds BOS by default, like a LLaMA tokenizer: the papers' protocol (no BOS) must switch it off
    bos_id = bpe.token_to_id("<bos>")
    bpe.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos_id)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>", pad_token="<eos>")
    assert tok("Answer:").input_ids[0] == bos_id
    return tok


@pytest.fixture(scope="module")
def model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,  # no truncation of the longest prompts
        initializer_range=0.2,  # peaked predictions: no near-ties between answer choices
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config).eval()


def _loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """Summed log P(continuation | context), tokenised as lm-eval does for causal models, no BOS."""
    n_spaces = len(context) - len(context.rstrip())  # trailing spaces belong to the continuation
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    ctx = tokenizer(context, add_special_tokens=False).input_ids
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    assert whole[: len(ctx)] == ctx
    cont = whole[len(ctx) :]
    assert ctx and cont
    with torch.no_grad():
        logprobs = model(torch.tensor([whole])).logits[0].float().log_softmax(-1)
    return sum(logprobs[len(ctx) - 1 + i, tok].item() for i, tok in enumerate(cont))


def _direct_scores(model, tokenizer, task, docs) -> tuple[list[bool], list[bool], list[float]]:
    """Per doc: acc, acc_norm and the margin between the two best answers."""
    delim = task.config.target_delimiter
    acc, acc_norm, margins = [], [], []
    for doc in docs:
        choices = task.doc_to_choice(doc)
        if task.multiple_input:  # winogrande: one context per option, one shared continuation
            lls = [_loglikelihood(model, tokenizer, ctx, delim + task.doc_to_target(doc)) for ctx in choices]
            gold = task.doc_to_text(doc)
        else:
            context = task.doc_to_text(doc)
            lls = [_loglikelihood(model, tokenizer, context, delim + c) for c in choices]
            gold = task.doc_to_target(doc)
            gold = choices.index(gold) if isinstance(gold, str) else gold
        lls_t = torch.tensor(lls, dtype=torch.float64)
        norm = lls_t / torch.tensor([float(len(c)) for c in choices], dtype=torch.float64)
        acc.append(int(lls_t.argmax()) == gold)
        acc_norm.append(int(norm.argmax()) == gold)
        for scores in (lls_t, norm):
            top2 = scores.topk(2).values
            margins.append(float(top2[0] - top2[1]))
    return acc, acc_norm, margins


def test_constants():
    assert DEFAULT_TASKS == ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
    assert set(PAPER_METRIC) == set(DEFAULT_TASKS)
    assert set(PAPER_METRIC.values()) <= {"acc", "acc_norm"}


def test_accuracy_matches_direct_loglikelihood(model, tokenizer, data_dir, monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    result = evaluate_zero_shot(model, tokenizer, tasks=CHECKED_TASKS, limit=LIMIT, batch_size=4, data_dir=data_dir)
    # our temporary offline switch is undone
    assert "HF_HUB_OFFLINE" not in os.environ and "HF_DATASETS_OFFLINE" not in os.environ

    assert result["missing"] == {}
    assert result["tasks_in_mean"] == CHECKED_TASKS
    assert result["limit"] == LIMIT
    assert result["n_examples"] == {t: LIMIT for t in CHECKED_TASKS}
    assert result["metric"] == {t: PAPER_METRIC[t] for t in CHECKED_TASKS}
    assert all(result["source"][t].startswith("local:") for t in CHECKED_TASKS)
    assert result["mean"] == pytest.approx(sum(result["accuracy"].values()) / len(CHECKED_TASKS))
    # lm-eval's standard errors, and the mean's: sqrt(sum se^2) / k
    assert set(result["stderr"]) == set(CHECKED_TASKS)
    assert result["mean_stderr"] == pytest.approx(sum(se**2 for se in result["stderr"].values()) ** 0.5 / len(CHECKED_TASKS))

    loaded, missing, _ = load_tasks(CHECKED_TASKS, data_dir)
    assert missing == {}
    for name in CHECKED_TASKS:
        task = loaded[name]
        docs = [task.eval_docs[i] for i in range(LIMIT)]
        # the rows evaluated are the first rows of the mirror file, unchanged
        mirror = Path(result["source"][name].removeprefix("local:"))
        with open(mirror, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in itertools.islice(fh, LIMIT)]
        assert [{k: d[k] for k in row} for d, row in zip(docs, rows)] == rows

        acc, acc_norm, margins = _direct_scores(model, tokenizer, task, docs)
        assert min(margins) > 1e-4, f"{name}: near-tie between answers, comparison would be fragile"
        expected = {"acc": sum(acc) / LIMIT, "acc_norm": sum(acc_norm) / LIMIT}
        assert result["accuracy"][name] == pytest.approx(expected[PAPER_METRIC[name]], abs=1e-9), name
        if name in result["acc_norm"]:
            assert result["acc_norm"][name] == pytest.approx(expected["acc_norm"], abs=1e-9), name
    assert "arc_easy" in result["acc_norm"]  # acc_norm was checked too


def test_unknown_task_raises(model, tokenizer):
    with pytest.raises(OwlError) as err:
        evaluate_zero_shot(model, tokenizer, tasks=["rte", "piqa"])
    message = str(err.value)
    assert "piqa" in message and "boolq" in message and "\n" not in message


def test_unavailable_task_is_missing_not_dropped(model, tokenizer, data_dir, monkeypatch):
    # hellaswag has no mirror; offline, the Hub cannot supply it either
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    result = evaluate_zero_shot(model, tokenizer, tasks=["rte", "hellaswag"], limit=3, data_dir=data_dir)
    assert list(result["missing"]) == ["hellaswag"]
    reason = result["missing"]["hellaswag"]
    assert reason and "\n" not in reason and "hellaswag" in reason
    assert list(result["accuracy"]) == ["rte"]
    assert result["tasks_in_mean"] == ["rte"]
    assert result["mean"] == result["accuracy"]["rte"]
    assert result["metric"] == {"rte": "acc", "hellaswag": "acc"}
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # the caller's setting is left as it was

    # without a data folder every task needs the Hub: all missing, nothing evaluated, no mean
    result = evaluate_zero_shot(model, tokenizer, tasks=["rte"], limit=3, data_dir=None)
    assert list(result["missing"]) == ["rte"] and result["accuracy"] == {} and result["mean"] is None


@pytest.mark.parametrize("seed", range(20))
def test_logits_to_keep_covers_every_scored_position(seed):
    """Property: for any right-padded batch of requests, every row's scored positions are kept."""
    g = torch.Generator().manual_seed(seed)
    max_length = int(torch.randint(8, 40, (1,), generator=g))
    requests = []
    for _ in range(int(torch.randint(1, 30, (1,), generator=g))):
        n_ctx, n_cont = (int(v) for v in torch.randint(1, 30, (2,), generator=g))
        n_cont = min(n_cont, max_length)
        # id 0 is lm-eval's padding; real tokens may be 0 too (the bound must survive that)
        tokens = torch.randint(0, 3, (n_ctx + n_cont,), generator=g).tolist()
        requests.append((("", ""), tokens[:n_ctx], tokens[n_ctx:]))
    bounds = scored_start_bounds(requests, max_length)
    order = torch.randperm(len(requests), generator=g).tolist()
    for batch_start in range(0, len(order), 4):
        batch = [requests[i] for i in order[batch_start : batch_start + 4]]
        rows = [(ctx + cont)[-(max_length + 1) :][:-1] for _, ctx, cont in batch]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        keep = logits_to_keep(ids, bounds)
        assert 1 <= keep <= width
        for row, (_, _, cont) in zip(rows, batch):
            # lm-eval slices [inplen + keep - width - contlen, inplen + keep - width) of the kept logits
            assert len(row) + keep - width - len(cont) >= 0


def test_scored_logits_lm_matches_plain_hflm(model, tokenizer, data_dir):
    """Log-likelihoods and greedy flags of every request equal lm-eval's plain HFLM."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    loaded, missing, _ = load_tasks(CHECKED_TASKS, data_dir)
    assert missing == {}
    requests = []
    for task in loaded.values():
        for i in range(6):
            doc = task.eval_docs[i]
            choices = task.doc_to_choice(doc)
            delim = task.config.target_delimiter
            if task.multiple_input:
                pairs = [(ctx, delim + task.doc_to_target(doc)) for ctx in choices]
            else:
                pairs = [(task.doc_to_text(doc), delim + c) for c in choices]
            requests += [Instance("loglikelihood", doc, pair, idx) for idx, pair in enumerate(pairs)]
    plain = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, add_bos_token=False)
    scored = _scored_logits_lm_class(HFLM)(pretrained=model, tokenizer=tokenizer, batch_size=4, add_bos_token=False)
    kept = []
    forward = model.forward

    def spy(*args, **kwargs):
        kept.append((kwargs.get("logits_to_keep", 0), args[0].shape[-1]))
        return forward(*args, **kwargs)

    expected = plain.loglikelihood(requests, disable_tqdm=True)
    model.forward = spy
    try:
        got = scored.loglikelihood(requests, disable_tqdm=True)
    finally:
        del model.forward
    assert [flag for _, flag in got] == [flag for _, flag in expected]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in expected], abs=1e-5)
    assert kept and all(0 < keep <= width for keep, width in kept)
    assert sum(keep for keep, _ in kept) < 0.5 * sum(width for _, width in kept)  # most logits skipped
