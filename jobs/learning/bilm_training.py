"""Training a biLM on one node, as the reference trains it, with the runtime's own model code (udfs/elmo/bilm.py).

Forward and backward language models share the char-CNN/highway/projection token encoder and one softmax over
the vocabulary; each direction has its own LSTM stack. Sentences ``<S> tokens </S>`` (reversed for the backward
model) are dealt into ``batch_size`` streams and cut into windows of ``unroll_steps``; the LSTM state of each
stream is carried from one window to the next (truncated back-propagation through time). Dropout on the LSTM
outputs, gradient clipping by global norm, sampled softmax when the vocabulary is large. TensorFlow backend.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from jobs.platform.config import SCHEMA
from udfs.elmo.chars import BOS_CHAR, EOS_CHAR, CharEncoder, _special_word
from udfs.elmo.options import BilmOptions

BOS, EOS, UNK = "<S>", "</S>", "<UNK>"


def _default(name: str):
    """A [train_bilm] setting's default, from the configuration's schema (one place for the defaults)."""
    return SCHEMA["train_bilm"][name].default


@dataclass
class TrainSettings:
    vocab_size: int = _default("vocab_size")
    char_dim: int = _default("char_dim")
    filters: list = field(default_factory=lambda: [list(pair) for pair in _default("filters")])
    n_highway: int = _default("n_highway")
    projection_dim: int = _default("projection_dim")
    lstm_dim: int = _default("lstm_dim")
    n_layers: int = _default("n_layers")
    cell_clip: float = _default("cell_clip")
    proj_clip: float = _default("proj_clip")
    use_skip_connections: bool = _default("use_skip_connections")
    max_characters_per_token: int = _default("max_characters_per_token")
    batch_size: int = _default("batch_size")
    unroll_steps: int = _default("unroll_steps")
    epochs: int = _default("epochs")
    max_steps: int = _default("max_steps")  # 0: as many as the epochs take
    learning_rate: float = _default("learning_rate")
    dropout: float = _default("dropout")
    clip_norm: float = _default("clip_norm")
    sampled_softmax_above: int = _default("sampled_softmax_above")  # larger vocabularies: sampled softmax
    negative_samples: int = _default("negative_samples")
    checkpoint_every: int = _default("checkpoint_every")
    held_out_fraction: float = _default("held_out_fraction")
    seed: int = _default("seed")

    def options(self) -> BilmOptions:
        return BilmOptions(
            char_embed_dim=self.char_dim,
            filters=tuple((int(w), int(n)) for w, n in self.filters),
            n_highway=self.n_highway,
            n_characters=262,
            max_characters_per_token=self.max_characters_per_token,
            activation="relu",
            lstm_dim=self.lstm_dim,
            projection_dim=self.projection_dim,
            n_layers=self.n_layers,
            cell_clip=self.cell_clip,
            proj_clip=self.proj_clip,
            use_skip_connections=self.use_skip_connections,
        )


def build_vocabulary(counts: dict[str, int], size: int) -> list[str]:
    """The reference's vocabulary order: <S>, </S>, <UNK>, then words by falling count (ties by word)."""
    words = sorted((w for w in counts if w not in (BOS, EOS, UNK)), key=lambda w: (-counts[w], w))
    return [BOS, EOS, UNK, *words[: max(0, size - 3)]]


def write_vocabulary(path: Path, vocab: list[str]) -> None:
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")


def split_held_out(sentences: list[list[str]], fraction: float, seed: int) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    held = rng.random(len(sentences)) < fraction
    return [s for s, h in zip(sentences, held, strict=True) if not h], [
        s for s, h in zip(sentences, held, strict=True) if h
    ]


class Streams:
    """Sentences dealt into ``rows`` streams for one direction: char ids and target word ids, window by window."""

    def __init__(
        self, sentences, vocab_index, encoder: CharEncoder, rows: int, unroll: int, reverse: bool, seed: int
    ):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(sentences))
        unk = vocab_index[UNK]
        lanes: list[list[str]] = [[] for _ in range(rows)]
        lengths = [0] * rows
        for i in order:  # fill the shortest stream next, so streams end up about equally long
            lane = int(np.argmin(lengths))
            tokens = sentences[i][::-1] if reverse else sentences[i]
            words = [EOS, *tokens, BOS] if reverse else [BOS, *tokens, EOS]
            lanes[lane].extend(words)
            lengths[lane] += len(words)
        usable = (min(lengths) - 1) // unroll * unroll
        self.windows = usable // unroll
        bos = _special_word(BOS_CHAR, encoder.max_chars) + 1
        eos = _special_word(EOS_CHAR, encoder.max_chars) + 1
        cache: dict[str, np.ndarray] = {BOS: bos, EOS: eos}
        self.chars = np.zeros((rows, usable, encoder.max_chars), np.int32)
        self.targets = np.zeros((rows, usable), np.int32)
        for r, lane in enumerate(lanes):
            for t in range(usable):
                word = lane[t]
                ids = cache.get(word)
                if ids is None:
                    ids = cache[word] = encoder.token(word)
                self.chars[r, t] = ids
                self.targets[r, t] = vocab_index.get(lane[t + 1], unk)
        self.unroll = unroll

    def window(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        span = slice(k * self.unroll, (k + 1) * self.unroll)
        return self.chars[:, span], self.targets[:, span]


def initial_params(opts: BilmOptions, vocab_size: int, seed: int) -> dict[str, np.ndarray]:
    """Random starting weights in the runtime's parameter layout (as bilm-tf initialises them), plus the softmax."""
    rng = np.random.default_rng(seed)
    f, p, h, s, d = opts.n_filters, opts.projection_dim, opts.lstm_dim, opts.state_dim, opts.char_embed_dim
    normal = lambda shape, std: (rng.standard_normal(shape) * std).astype(np.float32)  # noqa: E731
    params = {"char_embed": rng.uniform(-1, 1, (262, d)).astype(np.float32)}
    params["char_embed"][0] = 0.0
    for i, (width, num) in enumerate(opts.filters):
        params[f"cnn_kernel_{i}"] = normal((width * d, num), math.sqrt(1.0 / (width * d)))
        params[f"cnn_bias_{i}"] = np.zeros(num, np.float32)
    for i in range(opts.n_highway):
        params[f"highway_kernel_{i}"] = normal((f, 2 * f), math.sqrt(1.0 / f))
        params[f"highway_bias_{i}"] = np.concatenate([np.full(f, -2.0), np.zeros(f)]).astype(np.float32)
    if f != p:
        params["proj_kernel"] = normal((f, p), math.sqrt(1.0 / f))
        params["proj_bias"] = np.zeros(p, np.float32)
    for layer in range(opts.n_layers):
        inp = p if layer == 0 else s
        params[f"lstm_{layer}_input_kernel"] = normal((2, inp, 4 * h), math.sqrt(1.0 / (inp + s)))
        params[f"lstm_{layer}_state_kernel"] = normal((2, s, 4 * h), math.sqrt(1.0 / (inp + s)))
        params[f"lstm_{layer}_bias"] = np.zeros((2, 4 * h), np.float32)
        if s < h:
            params[f"lstm_{layer}_proj_kernel"] = normal((2, h, s), math.sqrt(1.0 / h))
    params["softmax_w"] = normal((vocab_size, s), 1.0 / math.sqrt(s))
    params["softmax_b"] = np.zeros(vocab_size, np.float32)
    return params


class BilmTrainer:
    """Holds the variables, the optimizer and the compiled training and evaluation steps."""

    def __init__(
        self, settings: TrainSettings, vocab: list[str], params: dict[str, np.ndarray] | None = None
    ):
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        from udfs.elmo.keras_import import import_keras

        keras = import_keras()
        import tensorflow as tf

        if keras.backend.backend() != "tensorflow":
            raise RuntimeError("biLM training runs on the TensorFlow backend; set KERAS_BACKEND=tensorflow")
        keras.utils.set_random_seed(settings.seed)  # dropout draws from it: same data + settings, same model
        self.settings, self.vocab = settings, vocab
        self.vocab_index = {w: i for i, w in enumerate(vocab)}
        self.opts = settings.options()
        self.encoder = CharEncoder(self.opts.max_characters_per_token)
        start = params or initial_params(self.opts, len(vocab), settings.seed)
        self.variables = {k: keras.Variable(v, name=k) for k, v in start.items()}
        self.optimizer = keras.optimizers.Adam(settings.learning_rate, global_clipnorm=settings.clip_norm)
        self.optimizer.build(list(self.variables.values()))
        self.step = 0
        self.position = (0, 0)  # (epoch, next window): where a resumed run continues
        self._train_step = tf.function(self._train_step_fn, reduce_retracing=True)
        self._eval_step = tf.function(self._eval_step_fn, reduce_retracing=True)

    # -- the model ----------------------------------------------------------------------------------------------
    def _top_outputs(self, chars_f, chars_b, c0, m0, training: bool):
        """Top LSTM outputs of both directions, time-major (T, B, S), and the final states."""
        import tensorflow as tf

        from udfs.elmo.bilm import bilstm_layer, token_embedding

        rows = tf.shape(chars_f)[0]
        both = token_embedding(self.variables, self.opts, tf.concat([chars_f, chars_b], 0))  # (2B, T, P)
        both = tf.transpose(both, (1, 0, 2))
        x = (both[:, :rows], both[:, rows:])
        mask = tf.ones((tf.shape(both)[0], rows, 1), both.dtype)
        finals_c, finals_m = [], []
        for layer in range(self.opts.n_layers):
            (out_f, out_b), (c, m) = bilstm_layer(
                self.variables, self.opts, layer, x, mask, c0[layer], m0[layer], False
            )
            if self.opts.use_skip_connections and layer > 0:
                out_f, out_b = out_f + x[0], out_b + x[1]
            finals_c.append(c)
            finals_m.append(m)
            x = (out_f, out_b)
            if training and self.settings.dropout:
                x = tuple(tf.nn.dropout(t, self.settings.dropout) for t in x)
        return x, tf.stack(finals_c), tf.stack(finals_m)

    def _losses(self, top, targets_f, targets_b, sampled: bool):
        """Mean cross entropy per direction."""
        import tensorflow as tf

        w, b = self.variables["softmax_w"], self.variables["softmax_b"]
        losses = []
        for out, targets in zip(top, (targets_f, targets_b), strict=True):
            flat = tf.reshape(out, (-1, self.opts.state_dim))
            labels = tf.reshape(tf.transpose(targets), (-1,))  # time-major like the outputs
            if sampled:
                loss = tf.nn.sampled_softmax_loss(
                    w,
                    b,
                    tf.cast(labels[:, None], tf.int64),
                    flat,
                    self.settings.negative_samples,
                    len(self.vocab),
                )
            else:
                logits = tf.matmul(flat, w, transpose_b=True) + b
                loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            losses.append(tf.reduce_mean(loss))
        return losses

    def _train_step_fn(self, chars_f, targets_f, chars_b, targets_b, c0, m0):
        import tensorflow as tf

        sampled = len(self.vocab) > self.settings.sampled_softmax_above
        with tf.GradientTape() as tape:
            top, c, m = self._top_outputs(chars_f, chars_b, c0, m0, training=True)
            loss_f, loss_b = self._losses(top, targets_f, targets_b, sampled)
            loss = (loss_f + loss_b) / 2.0
        variables = list(self.variables.values())
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss_f, loss_b, c, m

    def _eval_step_fn(self, chars_f, targets_f, chars_b, targets_b, c0, m0):
        top, c, m = self._top_outputs(chars_f, chars_b, c0, m0, training=False)
        loss_f, loss_b = self._losses(top, targets_f, targets_b, sampled=False)
        return loss_f, loss_b, c, m

    def zero_state(self, rows: int):
        o = self.opts
        return (
            np.zeros((o.n_layers, 2, rows, o.lstm_dim), np.float32),
            np.zeros((o.n_layers, 2, rows, o.state_dim), np.float32),
        )

    # -- running it -------------------------------------------------------------------------------------------
    def streams(self, sentences, epoch: int, rows: int | None = None):
        s = self.settings
        seed = s.seed * 1000 + epoch
        rows = rows or s.batch_size
        forward = Streams(sentences, self.vocab_index, self.encoder, rows, s.unroll_steps, False, seed)
        backward = Streams(sentences, self.vocab_index, self.encoder, rows, s.unroll_steps, True, seed)
        return forward, backward

    def run_epoch(
        self, sentences, epoch: int, start_window: int, report, checkpoint, total_steps: int | None
    ):
        forward, backward = self.streams(sentences, epoch)
        c, m = self.zero_state(self.settings.batch_size)
        for k in range(start_window, forward.windows):
            if total_steps and self.step >= total_steps:
                return False
            chars_f, targets_f = forward.window(k)
            chars_b, targets_b = backward.window(k)
            loss_f, loss_b, c, m = self._train_step(chars_f, targets_f, chars_b, targets_b, c, m)
            c, m = c.numpy(), m.numpy()
            self.step += 1
            self.position = (epoch, k + 1)
            report(self.step, epoch, k + 1, forward.windows, float(loss_f), float(loss_b))
            if checkpoint and self.step % self.settings.checkpoint_every == 0:
                checkpoint(epoch, k + 1)
        return True

    def perplexity(self, sentences) -> tuple[float, float]:
        """Held-out perplexity of each direction (full softmax, no dropout, state carried)."""
        rows = max(1, min(self.settings.batch_size, len(sentences)))
        forward, backward = self.streams(sentences, epoch=0, rows=rows)
        c, m = self.zero_state(rows)
        totals, n = [0.0, 0.0], 0
        for k in range(forward.windows):
            loss_f, loss_b, c, m = self._eval_step(*forward.window(k), *backward.window(k), c, m)
            totals[0] += float(loss_f)
            totals[1] += float(loss_b)
            n += 1
        return (math.exp(totals[0] / n), math.exp(totals[1] / n)) if n else (float("nan"), float("nan"))

    def unigram_perplexity(self, train, held_out) -> float:
        """The baseline: a unigram model of the training targets (add-one), on the held-out targets."""
        index, unk = self.vocab_index, self.vocab_index[UNK]
        counts = Counter()
        for s in train:
            counts.update(index.get(w, unk) for w in [*s, EOS])
        total = sum(counts.values()) + len(self.vocab)
        logp, n = 0.0, 0
        for s in held_out:
            for w in [*s, EOS]:
                logp += math.log((counts[index.get(w, unk)] + 1) / total)
                n += 1
        return math.exp(-logp / n) if n else float("nan")

    # -- saving -------------------------------------------------------------------------------------------------
    def numpy_params(self) -> dict[str, np.ndarray]:
        from keras import ops

        return {k: ops.convert_to_numpy(v) for k, v in self.variables.items()}

    def save_checkpoint(self, path: Path, epoch: int, window: int) -> None:
        """Weights, optimizer state and position, written atomically (a killed run never leaves half a file)."""
        state = {f"param/{k}": v for k, v in self.numpy_params().items()}
        from keras import ops

        state.update({f"opt/{i}": ops.convert_to_numpy(v) for i, v in enumerate(self.optimizer.variables)})
        meta = {"step": self.step, "epoch": epoch, "window": window, "settings": asdict(self.settings)}
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, meta=np.array(json.dumps(meta)), **state)
        os.replace(tmp, path)

    def load_checkpoint(self, path: Path) -> tuple[int, int]:
        data = np.load(path)
        meta = json.loads(str(data["meta"]))
        for k, v in self.variables.items():
            v.assign(data[f"param/{k}"])
        for i, v in enumerate(self.optimizer.variables):
            v.assign(data[f"opt/{i}"])
        self.step = meta["step"]
        self.position = (meta["epoch"], meta["window"])
        return self.position

    def export(self, folder: Path) -> None:
        """options.json + weights.hdf5 in the AllenNLP / bilm-tf format (the softmax is training-only)."""
        from udfs.elmo.weights import from_params, write_weight_file

        folder.mkdir(parents=True, exist_ok=True)
        params = {k: v for k, v in self.numpy_params().items() if not k.startswith("softmax_")}
        (folder / "options.json").write_text(
            json.dumps(self.opts.to_json(), indent=2) + "\n", encoding="utf-8"
        )
        tmp = folder / "weights.hdf5.tmp"
        write_weight_file(tmp, from_params(params, self.opts))
        os.replace(tmp, folder / "weights.hdf5")
        write_vocabulary(folder / "vocab.txt", self.vocab)


def tokens_per_step(settings: TrainSettings) -> int:
    return 2 * settings.batch_size * settings.unroll_steps


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def make_reporter(total_steps: int, step_tokens: int, first_step: int, log, every: int = 20):
    """A progress line every ``every`` steps: step, tokens/s, loss and perplexity per direction, time left."""
    start = time.perf_counter()
    last = {"time": start, "step": first_step}

    def report(step, epoch, window, windows, loss_f, loss_b):
        if step % every and step != total_steps:
            return
        now = time.perf_counter()
        rate = (step - last["step"]) * step_tokens / max(now - last["time"], 1e-9)
        last.update(time=now, step=step)
        left = (now - start) / max(step - first_step, 1) * max(total_steps - step, 0)
        log(
            f"step {step}/{total_steps} (epoch {epoch + 1}, window {window}/{windows}): {rate:,.0f} tokens/s, "
            f"loss fw {loss_f:.3f} bw {loss_b:.3f}, perplexity fw {math.exp(loss_f):,.1f} bw {math.exp(loss_b):,.1f}, "
            f"about {format_duration(left)} left"
        )

    return report
