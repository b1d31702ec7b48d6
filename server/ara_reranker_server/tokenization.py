"""(query, document) pairs as the served model's own tokenizer makes them: the document cut (never the query),
its start or its end, or split into windows; a long document cut by characters first without changing its tokens.
For an LLM reranker each row is its prompt (prompts.py) around the document, cut or windowed the same way.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

from ara_reranker_model.batching import LOW_PRIORITY_NICE, lower_thread_priority
from ara_reranker_server.core_types import RerankJob
from ara_reranker_server.errors import InvalidRequest
from ara_reranker_server.prompts import Prompt
from ara_reranker_server.windows import Window, Windows, span

__all__ = ["PairTokenizer", "PairTemplate", "Tokenized", "CHARS_PER_TOKEN"]

# Characters a document is cut to before tokenizing, per token of room: generous (Arabic and English
# average 3-6 characters per token); an exactness check falls back to the whole document when needed.
CHARS_PER_TOKEN = 16
# Nice value of the threads that tokenize large requests (``PairTokenizer.background``): on a busy node the event
# loop, small requests and the model's own processes go first; an idle CPU still runs them at full speed.
BACKGROUND_NICE = LOW_PRIORITY_NICE


@dataclass
class Tokenized:
    """A request's pairs, ready to score: ``pairs[row]`` the pair's token ids, ``types[row]`` its token type ids
    (models that read them; None otherwise); ``owners[row]`` is the row's document (a document's rows are
    consecutive); ``windows[row]`` its window with TRUNCATION_SPLIT (None otherwise)."""

    pairs: list[list[int]]
    owners: list[int]
    windows: list[Window] | None
    truncated: set[int] = field(default_factory=set)  # the documents cut (or with windows left out)
    types: list[list[int]] | None = None

    def extend(self, other: "Tokenized", first_index: int) -> None:
        """Append the pairs of the slice of documents that starts at ``first_index``."""
        self.pairs += other.pairs
        if other.types is not None:
            if self.types is None:
                self.types = []
            self.types += other.types
        self.owners += [first_index + i for i in other.owners]
        if self.windows is not None:
            self.windows += other.windows or []
        self.truncated |= {first_index + i for i in other.truncated}


@dataclass(frozen=True)
class PairTemplate:
    """How the model's post-processor joins one query to any document: the tokens before the document (the query's
    among them) and after it, with their token types. A pair is ``prefix + document ids + suffix``: the same ids as
    the post-processor's, without a call into the tokenizer (and a list copied out of it) per pair."""

    prefix: list[int]
    suffix: list[int]
    prefix_types: list[int]
    suffix_types: list[int]
    document_type: int

    @classmethod
    def of(cls, joined, probe_ids: list[int]) -> "PairTemplate | None":
        """From the post-processor's pair of the query and a probe document (``joined``); None when the probe's
        tokens are not one run, unchanged, of one token type (a post-processor that does more than add tokens
        around the two sequences): then each pair goes through the post-processor."""
        run = [i for i, sequence in enumerate(joined.sequence_ids) if sequence == 1]
        if not run or run != list(range(run[0], run[0] + len(probe_ids))):
            return None
        start, end = run[0], run[-1] + 1
        ids, types = joined.ids, joined.type_ids
        if ids[start:end] != probe_ids or len(set(types[start:end])) != 1:
            return None
        return cls(ids[:start], ids[end:], types[:start], types[end:], types[start])

    @classmethod
    def around(cls, prefix: list[int], suffix: list[int]) -> "PairTemplate":
        """Fixed tokens around every document (a causal-LM reranker's prompt; no token types)."""
        return cls(prefix, suffix, [], [], 0)

    def ids(self, document_ids: list[int]) -> list[int]:
        return self.prefix + document_ids + self.suffix

    def types(self, document_tokens: int) -> list[int]:
        return self.prefix_types + [self.document_type] * document_tokens + self.suffix_types


class PairTokenizer:
    """The served model's own fast tokenizer (its ``tokenizer.json``), applied to (query, document) pairs.

    One ``tokenizers.Tokenizer`` serves every thread: encoding does not mutate it, and truncation is
    done here on the document's encoding (never the query's), so no per-call state is set on it; any
    padding or truncation saved in tokenizer.json is switched off on load (``reset``), as transformers
    does on every call. A pair is the query and the document encoded separately and joined by the
    model's own post-processor, which is exactly what encoding the pair does."""

    def __init__(self, tokenizer, max_length: int, pad_id: int, threads: int, token_type_ids: bool = False,
                 prompt: Prompt | None = None) -> None:
        """``prompt``: a causal-LM reranker's (prompts.py): each row is its prompt around the document; None: a
        cross-encoder, whose pairs are its post-processor's."""
        self._tok = self.reset(tokenizer)
        self.prompt = prompt
        self.max_length = max_length
        self.pad_id = pad_id
        self.token_type_ids = token_type_ids  # BERT-style models: send each pair's token types too
        self.special_tokens = tokenizer.post_processor.num_special_tokens_to_add(True) if tokenizer.post_processor else 0
        # A document of a few tokens, to read each query's PairTemplate off the post-processor.
        self._probe = tokenizer.encode("probe text 1", add_special_tokens=False)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tokenize")
        # Large requests' slices: a second of CPU for a request of a hundred pages, which small calls should not
        # wait behind. Lower priority only works if the tokenizer encodes in the calling thread (no rayon pool of
        # its own): the gateway sets TOKENIZERS_PARALLELISM=false.
        self.background = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tokenize-large",
                                             initializer=lower_thread_priority)

    @staticmethod
    def reset(tokenizer):
        """Switch off padding and truncation saved in tokenizer.json: the pair must be the tokenizer's
        plain encoding, cut here (document only) and padded per chunk, as the reference does."""
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return tokenizer

    @property
    def takes_instruction(self) -> bool:
        """Whether a request may carry an instruction: a causal-LM reranker's prompt has a place for it."""
        return self.prompt is not None

    def encode_query(self, query: str):
        """The query's own tokens (no special tokens), as every pair of the request starts with them."""
        return self._tok.encode(query, add_special_tokens=False)

    def query_side(self, query: str, instruction: str | None = None) -> tuple[object, int]:
        """What every pair of a request shares, and how many tokens of a pair it takes: the query's encoding
        (a cross-encoder: joined to each document by the post-processor) or the prompt's tokens around the
        document (a causal-LM reranker; InvalidRequest when the instruction and the query leave no room)."""
        if self.prompt is not None:
            row = self.prompt.row(query, instruction)
            return PairTemplate.around(row.prefix, row.suffix), self.max_length - row.room
        query_encoding = self.encode_query(query)
        return query_encoding, self.special_tokens + len(query_encoding)

    def room(self, query: str, instruction: str | None = None) -> tuple[object, int]:
        """What every pair shares (``query_side``) and how many document tokens fit beside it."""
        side, fixed = self.query_side(query, instruction)
        room = self.max_length - fixed
        if room < 1:
            query_tokens = fixed - self.special_tokens
            raise InvalidRequest(
                f"query has {query_tokens} tokens; with a document it must have fewer than "
                f"{self.max_length - self.special_tokens} (max input length {self.max_length})"
            )
        return side, room

    def document_texts(self, documents: Sequence[str]) -> Sequence[str]:
        """The texts tokenized for the documents: a causal-LM prompt's lead written before each (prompts.py)."""
        if self.prompt is None:
            return documents
        lead = self.prompt.lead
        return [lead + d for d in documents]

    def encode(self, query: str, documents: Sequence[str], truncate: bool, from_start: bool = False,
               max_document_tokens: int | None = None, instruction: str | None = None) -> tuple[list[list[int]], int]:
        """Token ids of every (query, document) pair, and how many documents were truncated."""
        query_encoding, room = self.room(query, instruction)
        job = RerankJob(query, documents, truncate=truncate, from_start=from_start, max_document_tokens=max_document_tokens,
                        instruction=instruction)
        tokenized = self.encode_slice(query_encoding, room, None, documents, job, range(len(documents)))
        return tokenized.pairs, len(tokenized.truncated)

    def encode_slice(self, query_encoding, room: int, windows: Windows | None, documents: Sequence[str], job: "RerankJob",
                     indices: Sequence[int]) -> Tokenized:
        """Some of a request's documents (``indices``: their positions in the request, for errors): their
        windows (``windows`` set), else one pair each, cut as ``job`` says."""
        if windows is not None:
            return self.encode_windows(query_encoding, windows, documents, job.max_document_tokens)
        cap = room if job.max_document_tokens is None else min(room, job.max_document_tokens)
        documents = self.document_texts(documents)
        encodings = self._document_encodings(documents, cap, job.from_start)
        too_long = [i for i, e in enumerate(encodings) if len(e) > cap]  # len(): no copy of the ids
        if too_long and not job.truncate:
            i = too_long[0]
            tokens = len(self._tok.encode(documents[i], add_special_tokens=False).ids)  # the whole count, for the message
            if tokens > room:
                raise InvalidRequest(
                    f"document {indices[i]} makes {tokens + self.max_length - room} tokens "
                    f"with the query; the model takes at most {self.max_length} "
                    f"(use TRUNCATION_END to cut it)"
                )
            raise InvalidRequest(f"document {indices[i]} has {tokens} tokens; max_document_tokens={cap} "
                                 f"(use TRUNCATION_END to cut it)")
        for i in too_long:
            encodings[i].truncate(cap, direction="left" if job.from_start else "right")
        out = Tokenized([], list(range(len(encodings))), None, set(too_long), [] if self.token_type_ids else None)
        self._join(query_encoding, encodings, out)
        return out

    def encode_windows(self, query_encoding, windows: Windows, documents: Sequence[str],
                       max_document_tokens: int | None = None) -> Tokenized:
        """Pair encodings of the first ``max_windows`` windows of each document of one slice (owners:
        positions in the slice), and how many documents had more windows, or more than
        ``max_document_tokens`` tokens (truncated: such a document is cut to them first)."""
        out = Tokenized([], [], [], types=[] if self.token_type_ids else None)
        needed = windows.tokens_needed if max_document_tokens is None else min(windows.tokens_needed, max_document_tokens)
        parts_of_all = []
        lead = len(self.prompt.lead) if self.prompt is not None else 0
        for i, encoding in enumerate(self._document_encodings(self.document_texts(documents), needed, offsets=True)):
            cut = max_document_tokens is not None and len(encoding) > max_document_tokens
            if cut:
                encoding.truncate(max_document_tokens)
            encoding.truncate(windows.room, stride=windows.overlap)
            parts = [encoding, *encoding.overflowing]
            if cut or len(parts) > windows.max_windows:
                out.truncated.add(i)
            for w, part in enumerate(parts[: windows.max_windows]):
                # Each part joined on its own: the joined pair's overflowing parts would keep the
                # document's token type 0, where transformers gives the document type 1 in every window.
                parts_of_all.append(part)
                out.owners.append(i)
                out.windows.append(span(part, w, lead))
        self._join(query_encoding, parts_of_all, out)
        return out

    def _join(self, query_encoding, documents: list, out: Tokenized) -> None:
        """Append each document encoding's pair with the query (ids, and types when the model reads them) to ``out``:
        through the prompt's or the query's PairTemplate, or the post-processor itself where no template holds."""
        if isinstance(query_encoding, PairTemplate):
            out.pairs += [query_encoding.ids(e.ids) for e in documents]
            return
        template = PairTemplate.of(self._tok.post_process(query_encoding, self._probe, add_special_tokens=True), self._probe.ids)
        if template is None:
            joined = [self._tok.post_process(query_encoding, e, add_special_tokens=True) for e in documents]
            out.pairs += [pair.ids for pair in joined]
            if out.types is not None:
                out.types += [pair.type_ids for pair in joined]
            return
        ids = [e.ids for e in documents]  # each a new list: read once
        out.pairs += [template.ids(document) for document in ids]
        if out.types is not None:
            out.types += [template.types(len(document)) for document in ids]

    def _document_encodings(self, documents: Sequence[str], room: int, from_start: bool = False,
                            offsets: bool = False) -> list:
        """Each document's encoding, exact in its first ``room`` tokens (its last ones, ``from_start``),
        without tokenizing far more than the model can use: a long document is cut by characters first,
        keeping its start (its end). The cut is kept only when the kept tokens all come from words whole
        in the cut text (so tokenizing the whole document gives the same ones); otherwise the whole
        document is tokenized. Without ``offsets`` (only windows read them) the documents that were not cut are
        encoded without character offsets and word ids (``encode_batch_fast``: the same ids, a fifth less work)."""
        cut = room * CHARS_PER_TOKEN
        texts = [d[-cut:] if from_start else d[:cut] for d in documents]
        long = [i for i, d in enumerate(documents) if len(d) > cut]
        if offsets or len(long) == len(texts):
            encodings = self._tok.encode_batch(texts, add_special_tokens=False)
        else:
            encodings = self._tok.encode_batch_fast(texts, add_special_tokens=False)
            if long:  # the exactness check below reads their word ids
                for i, encoding in zip(long, self._tok.encode_batch([texts[i] for i in long], add_special_tokens=False)):
                    encodings[i] = encoding
        exact = _exact_suffix if from_start else _exact_prefix
        for i in long:
            if not exact(encodings[i], room):
                encodings[i] = self._tok.encode(documents[i], add_special_tokens=False)
        return encodings

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.background.shutdown(wait=False, cancel_futures=True)


def _exact_prefix(encoding, room: int) -> bool:
    """Whether the first ``room`` tokens of a cut text's encoding are those of the whole text: there are
    more than ``room`` of them and none of the first ``room`` belongs to the last (possibly cut) word."""
    words = encoding.word_ids
    return len(words) > room and words[room - 1] is not None and words[-1] is not None and words[room - 1] < words[-1]


def _exact_suffix(encoding, room: int) -> bool:
    """Whether the last ``room`` tokens of a text cut at its start are those of the whole text: there are
    more than ``room`` of them and none of the last ``room`` belongs to the first (possibly cut) word."""
    words = encoding.word_ids
    return len(words) > room and words[-room] is not None and words[0] is not None and words[0] < words[-room]
