"""The offline bert-base-uncased tokenizer (server/ara_reranker_model/bert_vocab.py): the real vocabulary, and a fast tokenizer
that encodes exactly as transformers' slow Python BERT tokenizer does on the same vocab.txt."""

from __future__ import annotations

import hashlib
import random
from importlib import metadata
from pathlib import Path

import pytest
import transformers
from tokenizers import Tokenizer
from transformers import AutoTokenizer, BertTokenizerFast

from ara_reranker_model import bert_vocab
from ara_reranker_model.bert_vocab import (
    VOCAB_PACKAGE,
    VOCAB_PACKAGE_VERSION,
    VOCAB_SHA256,
    BertVocabError,
    bert_uncased_vocab,
    save_bert_uncased_tokenizer,
)

pytestmark = pytest.mark.unit  # starts no process: make test-unit

# transformers 5 calls the slow Python tokenizer BertTokenizerLegacy (BertTokenizer is the fast one there).
SlowBertTokenizer = getattr(transformers, "BertTokenizerLegacy", None) or transformers.BertTokenizer

KNOWN_IDS = {
    "[PAD]": 0,
    "[unused0]": 1,
    "[unused98]": 99,
    "[UNK]": 100,
    "[CLS]": 101,
    "[SEP]": 102,
    "[MASK]": 103,
    "!": 999,
    "the": 1996,
    "hello": 7592,
    "world": 2088,
    "##s": 2015,
    "##ing": 2075,
    "##ed": 2098,
    "##book": 8654,
    "##～": 30521,
}

SENTENCES = [
    "Hello, world!",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "Reading a storybook!",
    "The quick brown fox jumps over the lazy dog.",
    "Café, naïve, résumé, façade, jalapeño, Zürich, Øresund, Ångström, smörgåsbord.",
    "ÉCOLE NORMALE SUPÉRIEURE — Crème Brûlée à la carte",
    "It's 3:45pm on 2024-09-17; pay $1,234.56 (or €99.99) by 5%.",
    "Call +1 (555) 010-9999 or e-mail someone@example.com, https://example.org/a?b=c&d=e#f",
    "Numbers: 0 1 2 3 10 100 1000 3.14159 2.71828 6.022e23 1e-9 42nd 1st 2nd 3rd",
    "中文字符和English混合 text, 北京是中国的首都。",
    "日本語のテキスト：東京タワー、カタカナ、ひらがな。",
    "한국어 문장도 있습니다. Привет, мир! Γειά σου Κόσμε. مرحبا بالعالم",
    "Pneumonoultramicroscopicsilicovolcanoconiosis and antidisestablishmentarianism are long words.",
    "a" * 99 + " " + "b" * 100 + " " + "c" * 101 + " " + "d" * 250,
    "supercalifragilisticexpialidocious" * 3,
    "Tabs\tand\nnewlines\r\nand   multiple    spaces   ",
    "   leading and trailing whitespace   ",
    "Control chars \x00 \x07 \u200b zero-width \ufeff BOM and \ufffd replacement",
    "Emoji 😀👍🏽 and symbols ™ © ® ° ± × ÷ ∞ ≈ ≠ ≤ ≥ → ← ↑ ↓",
    "Quotes: “smart” ‘single’ «guillemets» „low“ and dashes – — ‒ ―",
    "Contractions: don't, won't, can't, I'm, you're, they've, we'd, it's, o'clock",
    "Hyphenated well-known state-of-the-art mother-in-law follow-up",
    "URLs like www.google.com and paths like /usr/local/bin/python3.11",
    "Code: def f(x): return x**2 + 3*x - 1  # comment {braces} [brackets] <angles>",
    "[CLS] special [SEP] tokens [MASK] in [PAD] the [UNK] text",
    "lowercase [mask] and [cls] are not special",
    "ALL CAPS SENTENCE WITH SHOUTING!!!",
    "MiXeD CaSe WoRdS iPhone eBay McDonald's O'Reilly",
    "Ellipsis... and?! interrobang‽ and ¿inverted? ¡marks!",
    "Fullwidth ＡＢＣ１２３ and ligatures ﬁ ﬂ and superscripts x² y³ ½ ¼",
    "Combining accents: e\u0301 a\u0300 o\u0308 n\u0303 (decomposed)",
    "Vietnamese: Tiếng Việt có dấu, Hà Nội, Thành phố Hồ Chí Minh",
    "Turkish İstanbul ıi and German Straße GROẞ",
    "Hindi: नमस्ते दुनिया, Thai: สวัสดีชาวโลก, Hebrew: שלום עולם",
    "x",
    "",
    "?",
    "...",
    "covid-19 sars-cov-2 mRNA-1273 BNT162b2 H1N1",
    "The 2020–21 season; scores 3–1, 2-2, 0:0.",
    "what is the treatment for type 2 diabetes mellitus",
    "how long does it take to boil an egg",
    "definition of photosynthesis in biology",
    "Photosynthesis is the process by which green plants use sunlight to synthesize foods from carbon dioxide.",
]

WORDS = (
    "the of and to in is was for on that with as by at from his her an were are which this be or has had it not "
    "first one their its new after who they have two been other when there all during into school time may years "
    "unbelievably antidisestablishment unaffordable internationalization tokenization preprocessing reranker "
    "café naïve résumé Ångström über straße niño 東京 中国 北京 한국 Москва Αθήνα "
    "2024 3.14 1,000 $5 50% #1 @user e-mail co-operate U.S.A. Ph.D. i.e. e.g. "
    ", . ! ? ; : ' \" ( ) [ ] { } - -- / \\ & * + = < > | ~ ^ ` … — ·"
).split()


def _generated(count: int, seed: int = 20240917) -> list[str]:
    """Random sentences from WORDS, with random spacing and case."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 40))]
        words = [w.upper() if rng.random() < 0.1 else w.capitalize() if rng.random() < 0.2 else w for w in words]
        sentences.append("".join(w + rng.choice([" ", " ", " ", "", "  ", "\t"]) for w in words))
    return sentences


TEXTS = SENTENCES + _generated(250)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("bert-base-uncased")
    save_bert_uncased_tokenizer(target)
    return target


@pytest.fixture(scope="module")
def fast(tokenizer_dir: Path):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def slow(tokenizer_dir: Path):
    return SlowBertTokenizer(vocab_file=str(tokenizer_dir / "vocab.txt"), do_lower_case=True)


def test_known_ids_and_size() -> None:
    pieces = bert_uncased_vocab()
    assert len(pieces) == 30522
    assert len(set(pieces)) == 30522
    for piece, index in KNOWN_IDS.items():
        assert pieces[index] == piece, (piece, index)
    assert sum(p.startswith("##") for p in pieces) == 5828
    assert sum(p.startswith("[unused") for p in pieces) == 994


def test_vocab_is_a_fresh_copy() -> None:
    bert_uncased_vocab().clear()
    assert len(bert_uncased_vocab()) == 30522


def test_missing_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str):
        raise metadata.PackageNotFoundError(name)

    bert_vocab._load_vocab.cache_clear()
    monkeypatch.setattr(bert_vocab.metadata, "distribution", missing)
    try:
        with pytest.raises(BertVocabError, match=f"pip install {VOCAB_PACKAGE}=={VOCAB_PACKAGE_VERSION}"):
            bert_uncased_vocab()
    finally:
        bert_vocab._load_vocab.cache_clear()


def test_wrong_file_is_refused() -> None:
    pieces = bert_uncased_vocab()
    pieces[101], pieces[102] = pieces[102], pieces[101]
    with pytest.raises(BertVocabError, match="id 101 is '\\[SEP\\]'"):
        bert_vocab._check_pieces(pieces, Path("vocab.txt"))


def test_saved_files(tokenizer_dir: Path) -> None:
    names = sorted(p.name for p in tokenizer_dir.iterdir())
    assert names == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    assert hashlib.sha256((tokenizer_dir / "vocab.txt").read_bytes()).hexdigest() == VOCAB_SHA256


def test_autotokenizer_loads_fast_bert(fast) -> None:
    assert isinstance(fast, BertTokenizerFast)
    assert fast.is_fast
    assert fast.model_max_length == 512
    assert len(fast) == 30522
    assert (fast.cls_token_id, fast.sep_token_id, fast.pad_token_id, fast.unk_token_id, fast.mask_token_id) == (
        101,
        102,
        0,
        100,
        103,
    )
    assert fast.tokenize("reading a storybook!") == ["reading", "a", "story", "##book", "!"]
    assert fast("hello world")["input_ids"] == [101, 7592, 2088, 102]


def test_model_max_length_is_configurable(tmp_path: Path) -> None:
    save_bert_uncased_tokenizer(tmp_path / "tok", model_max_length=128)
    assert AutoTokenizer.from_pretrained(tmp_path / "tok").model_max_length == 128


def _encode(tokenizer, *args, **kwargs) -> tuple[list[int], list[int]]:
    encoding = tokenizer(*args, return_token_type_ids=True, **kwargs)
    return encoding["input_ids"], encoding["token_type_ids"]


def test_fast_equals_slow_on_single_texts(fast, slow) -> None:
    for text in TEXTS:
        assert _encode(fast, text) == _encode(slow, text), text
        assert fast.tokenize(text) == slow.tokenize(text), text
        ids = slow(text)["input_ids"]
        assert fast.decode(ids, skip_special_tokens=True) == slow.decode(ids, skip_special_tokens=True), text


@pytest.mark.parametrize("max_length", [16, 40, 512])
def test_fast_equals_slow_on_pairs_with_truncation(fast, slow, max_length: int) -> None:
    rng = random.Random(max_length)
    queries = [t for t in TEXTS if 0 < len(slow.tokenize(t)) <= 8]
    for _ in range(120):
        query, document = rng.choice(queries), " ".join(rng.sample(TEXTS, 3))
        kwargs = {"truncation": "only_second", "max_length": max_length}
        ids, types = _encode(fast, query, document, **kwargs)
        assert (ids, types) == _encode(slow, query, document, **kwargs), (query, document)
        assert len(ids) <= max_length
        first_sep = ids.index(102)
        assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)


def test_raw_tokenizer_json_equals_slow(tokenizer_dir: Path, slow) -> None:
    """The gateway reads tokenizer.json with the tokenizers library alone: it must encode the same."""
    raw = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    for query, document in zip(TEXTS, reversed(TEXTS)):
        encoding = raw.encode(query, document)
        assert (encoding.ids, encoding.type_ids) == _encode(slow, query, document), (query, document)
