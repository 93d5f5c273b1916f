"""The `local` judge backend: a Hugging Face causal LM scoring by the probability of score tokens.

Sampling a verdict from a small model is noisy and slow; reading its next-token distribution over
"1".."9" after "Score (1-9):" is deterministic, costs one forward pass per sample, and keeps the
judge's uncertainty (a 50/50 between 3 and 8 averages to 5.5 instead of a coin flip).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import torch

from evaluation.errors import ConfigError
from evaluation.judge import (
    LOCAL_PAIRWISE_CUE,
    LOCAL_PAIRWISE_RUBRIC,
    LOCAL_RUBRIC,
    LOCAL_SCORE_CUE,
    CachedJudge,
    Sample,
    Verdict,
    render_pair,
    render_sample,
)
from evaluation.verdict_cache import VerdictCache

log = logging.getLogger(__name__)


def _label_token_ids(tokenizer, labels: Sequence[str], model_name: str) -> list[list[int]]:
    """Per label, every single token that spells it: bare ("7") and after a space (" 7").

    Which one follows "Score (1-9):" depends on the vocabulary, so the judge sums both; a label
    with no single-token spelling cannot be read off one next-token distribution.
    """
    ids = []
    for label in labels:
        found = {
            enc[0]
            for variant in (label, " " + label)
            if len(enc := tokenizer.encode(variant, add_special_tokens=False)) == 1
            and enc[0] != tokenizer.unk_token_id  # an unknown-token stand-in spells nothing
        }
        if not found:
            raise ConfigError(
                "judge.model",
                model_name,
                f"a model whose tokenizer spells each of {list(labels)} as one token",
            )
        ids.append(sorted(found))
    return ids


@torch.no_grad()
def weights_fingerprint(model: torch.nn.Module, per_tensor: int = 1024) -> str:
    """sha256 of every parameter's name, dtype, shape and `per_tensor` evenly strided values.

    Part of the local judge's identity, so that new weights behind the same path are a new judge.
    Hashing every byte would cost seconds per trial for a 7B judge (and a copy off the GPU); a
    fine-tune, a merged adapter or another quantization changes values all through each tensor
    it touches, so a strided sample of every tensor sees it.
    """
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(f"{name}|{param.dtype}|{tuple(param.shape)}|".encode())
        if param.is_meta:  # offloaded by accelerate: no values here to read
            continue
        flat = param.detach().reshape(-1)
        picked = flat[:: max(1, flat.numel() // per_tensor)][:per_tensor].contiguous()
        digest.update(picked.view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()


class LocalJudge(CachedJudge):
    """A Hugging Face causal LM as judge: expected score from its next-token distribution.

    The prompt ends with "Score (1-9):"; the probabilities of the tokens "1".."9" (renormalised over
    those nine) give an expected score E in 1..9, reported as 1 + (E - 1) * 9 / 8 so that it lies
    on the same 1..10 scale as the HTTP judge. Reading probabilities instead of sampling a digit
    is deterministic and uses the judge's uncertainty. Comparisons read "A" against "B", in both
    orders. The caller passes a loaded model (built-in names are resolved in `trainables`).
    """

    rubric = LOCAL_RUBRIC + LOCAL_SCORE_CUE
    pairwise_rubric = LOCAL_PAIRWISE_RUBRIC + LOCAL_PAIRWISE_CUE

    def __init__(self, model, tokenizer, batch_size: int = 8, cache: VerdictCache | None = None) -> None:
        model_name = str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
        if batch_size < 1:
            raise ConfigError("judge.batch_size", batch_size, "an integer >= 1")
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        if tokenizer.pad_token is None:  # padding is masked out; any known token will do
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.convert_ids_to_tokens(0)
        self.digit_ids = _label_token_ids(tokenizer, [str(d) for d in range(1, 10)], model_name)
        self.ab_ids = _label_token_ids(tokenizer, ["A", "B"], model_name)
        identity = {
            "backend": "local",
            "model": model_name,
            "revision": getattr(model.config, "_commit_hash", None),  # set when loaded from the hub
            "weights": weights_fingerprint(model),
            # The prompt is the tokenizer's chat template around the rubric; the score is read off
            # the label tokens.
            "chat_template": getattr(tokenizer, "chat_template", None),
            "vocab_size": len(tokenizer),
            "labels": {"digits": self.digit_ids, "ab": self.ab_ids},
        }
        super().__init__(f"local:{model_name}", identity, cache)

    def __repr__(self) -> str:
        return f"LocalJudge({self.name!r}, batch_size={self.batch_size})"

    def _prompt(self, instructions: str, body: str, cue: str) -> tuple[str, bool]:
        """Chat template when the tokenizer has one (it adds its own special tokens), else plain text."""
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": f"{instructions}\n\n{body}"}]
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return text + cue, False
        return f"{instructions}\n\n{body}\n\n{cue}", True

    @torch.inference_mode()
    def _label_logprobs(
        self, prompts: list[tuple[str, bool]], label_ids: list[list[int]]
    ) -> list[torch.Tensor | None]:
        """Per prompt, log-probabilities over the labels of the next token (None if out of memory)."""
        out: list[torch.Tensor | None] = []
        device = next(self.model.parameters()).device
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            side = self.tokenizer.padding_side
            self.tokenizer.padding_side = "left"  # the last position is then every prompt's next token
            try:
                enc = self.tokenizer(
                    [text for text, _ in chunk],
                    add_special_tokens=chunk[0][1],
                    padding=True,
                    return_tensors="pt",
                ).to(device)
            finally:
                self.tokenizer.padding_side = side
            # Positions count real tokens only, so a left-padded prompt is scored as if alone.
            positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            try:
                logits = (
                    self.model(
                        input_ids=enc["input_ids"],
                        attention_mask=enc["attention_mask"],
                        position_ids=positions,
                        logits_to_keep=1,  # only the next token: spares a (batch, length, vocab) tensor
                    )
                    .logits[:, -1, :]
                    .float()
                )
            except torch.OutOfMemoryError as err:
                log.warning("local judge out of memory on a batch of %d: %s", len(chunk), err)
                out.extend([None] * len(chunk))
                continue
            per_label = torch.stack([logits[:, ids].logsumexp(-1) for ids in label_ids], dim=-1)
            out.extend(per_label.log_softmax(-1).cpu())
        return out

    def _score_uncached(self, samples: list[Sample]) -> list[Verdict]:
        prompts = [self._prompt(LOCAL_RUBRIC, render_sample(s), LOCAL_SCORE_CUE) for s in samples]
        verdicts = []
        for logp in self._label_logprobs(prompts, self.digit_ids):
            if logp is None:
                verdicts.append(Verdict(None, "local judge ran out of memory", missing=True))
                continue
            probs = logp.exp()
            expected = float((probs * torch.arange(1, 10, dtype=probs.dtype)).sum())
            top = int(probs.argmax())
            reason = f"expected {expected:.2f} on 1-9 (most likely {top + 1}, p={float(probs[top]):.2f})"
            verdicts.append(Verdict(1 + (expected - 1) * 9 / 8, reason))
        return verdicts

    def _prefer_first_uncached(self, pairs: list[tuple[Sample, Sample]]) -> list[float | None]:
        prompts = [
            self._prompt(LOCAL_PAIRWISE_RUBRIC, render_pair(x, y), LOCAL_PAIRWISE_CUE) for x, y in pairs
        ]
        prefs: list[float | None] = []
        for logp in self._label_logprobs(prompts, self.ab_ids):
            if logp is None:
                prefs.append(None)
            else:  # a verdict, like the HTTP judge's: A, B, or a tie when the two are equally likely
                diff = float(logp[0] - logp[1])
                prefs.append(0.5 if abs(diff) < 1e-6 else float(diff > 0))
        return prefs
