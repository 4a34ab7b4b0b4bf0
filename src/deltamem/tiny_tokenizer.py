"""A small byte-level BPE tokenizer with a ChatML chat template, built locally in under a second.

It gives the `tiny` backbone real text handling (chat templates, padding, special tokens) with
no download. The training corpus is generated from a fixed word list, so the result is the
same on every machine.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# A ChatML template (system / user / assistant turns framed by <|im_start|> … <|im_end|>).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WORDS = (
    "the a an of to and in is was for on with as by at from that this it he she they we you "
    "name lives works likes city job pet color food friend moved now year today said asked "
    "what where who when which how does did is answer question user assistant system memory "
    "alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy rupert "
    "paris london tokyo berlin madrid rome oslo lima cairo delhi "
    "doctor teacher pilot chef nurse painter farmer lawyer baker writer "
    "red blue green yellow purple orange black white cat dog fish bird horse rabbit "
    "pizza pasta sushi salad soup bread rice curry tea coffee "
    "one two three four five six seven eight nine ten hello thanks okay sure yes no maybe"
).split()


def _corpus() -> list[str]:
    lines = []
    for a, b, c in itertools.islice(itertools.product(_WORDS, repeat=3), 0, 40000, 7):
        lines.append(f"{a} {b} {c}. {a.capitalize()} {c}, {b}? 0123456789")
    return lines


@lru_cache(maxsize=1)
def _build(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        chat_template=CHATML_TEMPLATE,
    )
    return tokenizer


def build_tiny_tokenizer(vocab_size: int = 1024):
    """A fresh copy of the locally trained tokenizer (vocab ≤ `vocab_size`)."""
    import copy

    return copy.deepcopy(_build(vocab_size))
