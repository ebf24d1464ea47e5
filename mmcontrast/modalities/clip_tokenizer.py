"""The CLIP byte-level BPE tokenizer, built offline from the vocabulary file open_clip ships.

OpenAI's CLIP vocabulary is 256 byte symbols, the same with an end-of-word marker, 48,894 merges and two
special tokens. open_clip ships the merges (``bpe_simple_vocab_16e6.txt.gz``); this module writes them in the
form transformers' ``CLIPTokenizer`` takes, so a CLIP model trained here is saved with a tokenizer that
transformers and its pipelines load, with no download.
"""

from __future__ import annotations

import gzip

_NUM_MERGES = 49152 - 256 - 2


def _byte_symbols() -> list[str]:
    """GPT-2 / CLIP byte -> printable unicode symbol table, in byte order of the vocabulary."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def clip_tokenizer(model_max_length: int = 77):
    """OpenAI CLIP's ``CLIPTokenizer`` (byte-level BPE, 49,408 tokens), built from open_clip's vocabulary file."""
    from open_clip.tokenizer import default_bpe
    from transformers import CLIPTokenizer

    with gzip.open(default_bpe()) as handle:
        lines = handle.read().decode("utf-8").split("\n")[1 : _NUM_MERGES + 1]
    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(line.split()) for line in lines]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(
        vocab={token: i for i, token in enumerate(vocab)},
        merges=[tuple(line.split()) for line in lines],
        model_max_length=model_max_length,
    )
