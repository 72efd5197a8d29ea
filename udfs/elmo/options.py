"""The biLM's hyper-parameters, read from the reference's ``options.json`` and checked."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


class ModelFormatError(ValueError):
    """A model file is missing, unreadable, or does not match its options; the message names what and where."""


@dataclass(frozen=True)
class BilmOptions:
    char_embed_dim: int
    filters: tuple[tuple[int, int], ...]  # (width, number of filters)
    n_highway: int
    n_characters: int
    max_characters_per_token: int
    activation: str
    lstm_dim: int
    projection_dim: int
    n_layers: int
    cell_clip: float | None
    proj_clip: float | None
    use_skip_connections: bool

    @property
    def n_filters(self) -> int:
        return sum(num for _, num in self.filters)

    @property
    def state_dim(self) -> int:
        """Size of the LSTM output (and of its ``m`` state): the projection, or the cell when there is none."""
        return self.projection_dim if self.projection_dim < self.lstm_dim else self.lstm_dim

    @property
    def output_dim(self) -> int:
        """Width of every output layer: [forward; backward]."""
        return 2 * self.projection_dim

    def flops_per_token(self) -> int:
        """Multiply-add FLOPs (2 per MAC) of one token through the whole biLM, both directions.

        char CNN   sum_w 2 * width * char_dim * n_filters_w * (max_chars - width + 1)
        highway    n_highway * 2 * (2 * F * F)                  (carry and transform gates, F = n_filters)
        projection 2 * F * P                                    (when F != P)
        LSTM       2 dirs * n_layers * 2 * ((I + S) * 4H + H*S) (gates from input I and state S; projection)
        Element-wise work (gates, clipping, max-pooling) is not counted.
        """
        f, p = self.n_filters, self.projection_dim
        cnn = sum(
            2 * w * self.char_embed_dim * n * (self.max_characters_per_token - w + 1) for w, n in self.filters
        )
        highway = self.n_highway * 2 * 2 * f * f
        proj = 2 * f * p if f != p else 0
        return cnn + highway + proj + self.lstm_flops_per_token()

    def lstm_flops_per_token(self) -> int:
        """The biLSTM's part of ``flops_per_token``: what a token costs when its token layer comes from a cache."""
        p, h, s = self.projection_dim, self.lstm_dim, self.state_dim
        inputs = sum(2 * 2 * (p if layer == 0 else s) * 4 * h for layer in range(self.n_layers))
        return inputs + self.recurrence_flops_per_token()

    def recurrence_flops_per_token(self) -> int:
        """The biLSTM's per-step products (state -> gates, cell -> projection), every layer, both directions: the
        part of ``lstm_flops_per_token`` that must run step by step; the input projections are the rest."""
        h, s = self.lstm_dim, self.state_dim
        return self.n_layers * 2 * 2 * (s * 4 * h + (h * s if s < h else 0))

    def to_json(self) -> dict:
        return {
            "lstm": {
                "cell_clip": self.cell_clip,
                "use_skip_connections": self.use_skip_connections,
                "n_layers": self.n_layers,
                "proj_clip": self.proj_clip,
                "projection_dim": self.projection_dim,
                "dim": self.lstm_dim,
            },
            "char_cnn": {
                "embedding": {"dim": self.char_embed_dim},
                "filters": [list(f) for f in self.filters],
                "n_highway": self.n_highway,
                "n_characters": self.n_characters,
                "max_characters_per_token": self.max_characters_per_token,
                "activation": self.activation,
            },
        }

    @classmethod
    def from_json(cls, data: dict, source: str = "options") -> BilmOptions:
        try:
            cnn, lstm = data["char_cnn"], data["lstm"]
            options = cls(
                char_embed_dim=int(cnn["embedding"]["dim"]),
                filters=tuple((int(w), int(n)) for w, n in cnn["filters"]),
                n_highway=int(cnn.get("n_highway") or 0),
                n_characters=int(cnn["n_characters"]),
                max_characters_per_token=int(cnn["max_characters_per_token"]),
                activation=str(cnn["activation"]),
                lstm_dim=int(lstm["dim"]),
                projection_dim=int(lstm["projection_dim"]),
                n_layers=int(lstm.get("n_layers", 1)),
                cell_clip=lstm.get("cell_clip"),
                proj_clip=lstm.get("proj_clip"),
                use_skip_connections=bool(lstm.get("use_skip_connections", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"{source}: not a biLM options file (missing or bad {exc})") from None
        problems = []
        if options.activation not in ("relu", "tanh"):
            problems.append(f"char_cnn.activation is {options.activation!r}; expected 'relu' or 'tanh'")
        if options.n_characters not in (261, 262):
            problems.append(f"char_cnn.n_characters is {options.n_characters}; the reference uses 262")
        if options.max_characters_per_token < 3:
            problems.append("char_cnn.max_characters_per_token must be at least 3")
        if any(w > options.max_characters_per_token for w, _ in options.filters):
            problems.append("a char_cnn filter is wider than max_characters_per_token")
        if problems:
            raise ModelFormatError(f"{source}: " + "; ".join(problems))
        return options

    @classmethod
    def load(cls, path: str | Path) -> BilmOptions:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelFormatError(f"options file {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise ModelFormatError(f"options file {path} is not valid JSON: {exc}") from None
        return cls.from_json(data, source=str(path))
