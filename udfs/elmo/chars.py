"""Tokens -> character ids exactly as the reference encodes them (bilm-tf UnicodeCharsVocabulary + Batcher)."""

from __future__ import annotations

import numpy as np

BOS_CHAR, EOS_CHAR, BOW_CHAR, EOW_CHAR, PAD_CHAR = 256, 257, 258, 259, 260


def _special_word(char: int, max_chars: int) -> np.ndarray:
    code = np.full(max_chars, PAD_CHAR, dtype=np.int32)
    code[0], code[1], code[2] = BOW_CHAR, char, EOW_CHAR
    return code


def special_token_ids(char: int, max_chars: int) -> np.ndarray:
    """The ids of <S> (``BOS_CHAR``) or </S> (``EOS_CHAR``) as the Batcher gives them (reference ids + 1)."""
    return _special_word(char, max_chars) + 1


def token_char_ids(token: str, max_chars: int) -> np.ndarray:
    """UTF-8 bytes between begin/end-of-word markers, clipped to ``max_chars - 2`` bytes, padded."""
    code = np.full(max_chars, PAD_CHAR, dtype=np.int32)
    encoded = token.encode("utf-8", "ignore")[: max_chars - 2]
    code[0] = BOW_CHAR
    code[1 : len(encoded) + 1] = np.frombuffer(encoded, dtype=np.uint8)
    code[len(encoded) + 1] = EOW_CHAR
    return code


class CharEncoder:
    """Batches of tokenised sentences -> ``(batch, max_len + 2, max_chars)`` int32 ids; 0 marks padding tokens.

    Ids are the reference's plus one, as its Batcher gives them (so 0 can be the padding token).
    """

    def __init__(self, max_chars: int, cache_size: int = 200_000):
        self.max_chars = max_chars
        self._bos = special_token_ids(BOS_CHAR, max_chars)
        self._eos = special_token_ids(EOS_CHAR, max_chars)
        self._cache: dict[str, np.ndarray] = {}
        self._cache_size = cache_size

    def special(self, char: int) -> np.ndarray:
        """The ids of <S> (``BOS_CHAR``) or </S> (``EOS_CHAR``)."""
        return self._bos if char == BOS_CHAR else self._eos

    def token(self, token: str) -> np.ndarray:
        ids = self._cache.get(token)
        if ids is None:
            ids = token_char_ids(token, self.max_chars) + 1
            if len(self._cache) < self._cache_size:
                self._cache[token] = ids
        return ids

    def batch(
        self, sentences: list[list[str]], pad_to: int | None = None, rows: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(char ids, lengths including <S> and </S>); ``pad_to``/``rows`` pad the time and batch axes."""
        longest = max((len(s) for s in sentences), default=0) + 2
        steps = max(longest, pad_to or 0)
        ids = np.zeros((max(len(sentences), rows or 0), steps, self.max_chars), dtype=np.int32)
        lengths = np.zeros(ids.shape[0], dtype=np.int32)
        for row, sentence in enumerate(sentences):
            n = len(sentence)
            ids[row, 0] = self._bos
            for t, token in enumerate(sentence, start=1):
                ids[row, t] = self.token(token)
            ids[row, n + 1] = self._eos
            lengths[row] = n + 2
        return ids, lengths
