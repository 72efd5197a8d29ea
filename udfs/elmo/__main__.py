"""Command line of the ELMo runtime: ``python -m udfs.elmo embed ...`` and ``python -m udfs.elmo bench ...``."""

from __future__ import annotations

import argparse
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m udfs.elmo", description="ELMo biLM runtime")
    commands = parser.add_subparsers(dest="command", required=True)

    embed = commands.add_parser(
        "embed",
        help="embed a file of sentences into an .npz",
        description="Embed one sentence per line (tokens separated by whitespace, used as given). The output "
        "has, for line i (0-based), an array named 'i' of shape [n_layers + 1, n_tokens, 2 * projection_dim], "
        "float32 (or the chosen --layer).",
    )
    embed.add_argument(
        "--model",
        help="model spec: a native folder (options.json + one .hdf5), an unpacked TF Hub module folder, a "
        "file:// URL or a TF Hub handle (downloaded into $TFHUB_CACHE_DIR)",
    )
    embed.add_argument(
        "--signature",
        choices=["tokens", "default"],
        default="tokens",
        help="TF Hub modules: feed tokens (default) or whole lines, which the module splits on spaces",
    )
    embed.add_argument("--options", help="options.json (instead of --model)")
    embed.add_argument("--weights", help="hdf5 weights file (instead of --model)")
    embed.add_argument("--input", required=True, help="text file, one sentence per line")
    embed.add_argument("--output", required=True, help="output .npz")
    embed.add_argument(
        "--layer", default="all", help="all (default), word_emb, lstm_outputs1, lstm_outputs2, elmo"
    )
    embed.add_argument(
        "--stateful",
        action="store_true",
        help="carry each batch row's LSTM state to the next batch, as the reference does (for conformance); "
        "consecutive groups of --batch-size lines form the batches, in order",
    )
    embed.add_argument(
        "--batch-size", type=int, default=None, help="sentences per batch (required with --stateful)"
    )
    embed.add_argument("--token-budget", type=int, default=None, help="most rows x padded steps per batch")
    embed.add_argument(
        "--backend", choices=["tensorflow", "jax", "torch"], default=None, help="Keras backend"
    )
    embed.add_argument(
        "--token-cache-mb",
        type=int,
        default=-1,
        help="token cache: MB of distinct tokens' context-free vectors kept for reuse (-1 = sized for the "
        "machine, the default; 0 = off)",
    )
    embed.add_argument(
        "--precision",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="compute precision of the native runtime (float32 is exact; the others change the vectors)",
    )

    commands.add_parser("bench", help="speed, memory and FLOP utilisation; `bench --help` for its options")
    return parser


def read_sentences(path: str) -> list[list[str]]:
    with open(path, encoding="utf-8") as fin:
        return [line.rstrip("\n").split() for line in fin]


def embed(args: argparse.Namespace) -> int:
    from udfs.elmo.runtime import DEFAULT_TOKEN_BUDGET, configure_backend

    configure_backend(args.backend)
    import numpy as np

    from udfs.elmo.cpu_features import bf16_warning
    from udfs.elmo.model_source import load_model, resolve
    from udfs.elmo.runtime import load_elmo

    if not args.model and not (args.options and args.weights):
        raise SystemExit("embed: give --model SPEC, or --options and --weights")
    if args.stateful and not args.batch_size:
        raise SystemExit("embed: --stateful needs --batch-size")
    start = time.perf_counter()
    budget = args.token_budget or DEFAULT_TOKEN_BUDGET
    if args.options and args.weights:
        elmo = load_elmo(
            args.model or ".",
            args.options,
            args.weights,
            token_budget=budget,
            token_cache_mb=args.token_cache_mb,
            precision=args.precision,
        )
        elmo.max_rows = args.batch_size
    else:
        source = resolve(args.model)
        if args.stateful and source.kind != "native":
            raise SystemExit(
                "embed: --stateful needs a native model (convert the module with jobs.hub_convert)"
            )
        elmo = load_model(
            source,
            budget,
            args.signature,
            max_rows=args.batch_size,
            token_cache_mb=args.token_cache_mb,
            precision=args.precision,
        )
    if note := bf16_warning(args.precision, elmo.device):
        print(f"embed: WARNING: {note} (--precision)", file=sys.stderr)
    sentences = read_sentences(args.input)
    print(
        f"embed: {len(sentences)} sentences, model {elmo.model_id}, backend {elmo.backend} on {elmo.device}",
        file=sys.stderr,
    )
    if args.stateful:
        groups = [sentences[i : i + args.batch_size] for i in range(0, len(sentences), args.batch_size)]
        vectors = [v for group in elmo.embed_stateful(groups, layer=args.layer) for v in group]
    else:
        vectors = []
        chunk = 5000  # stateless vectors do not depend on the chunking; it only paces the progress lines
        for begin in range(0, len(sentences), chunk):
            vectors += elmo.embed(sentences[begin : begin + chunk], layer=args.layer)
            print(f"embed: {min(begin + chunk, len(sentences))}/{len(sentences)} sentences", file=sys.stderr)
    np.savez(args.output, **{str(i): v for i, v in enumerate(vectors)})
    tokens = sum(len(s) for s in sentences)
    took = time.perf_counter() - start
    cache = getattr(elmo, "token_cache", None)
    served = (
        f"; token cache hit rate {cache.stats()['hit_rate']:.1%}, {len(cache):,} tokens"
        if cache is not None and cache.enabled and not args.stateful
        else "; token cache off"
    )
    print(f"embed: wrote {args.output} ({tokens} tokens in {took:.1f} s{served})", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from udfs.elmo.bench import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return embed(args)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"embed: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
