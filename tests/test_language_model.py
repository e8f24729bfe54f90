"""Language models: a text becomes next-token windows split by position, a small model learns it far below the
unigram entropy, and writes text from the app's engine, the CLI and the bundle's generate.py alike."""

import json
from collections import Counter

import numpy as np
import pytest

from engine.data.builtin import _tales
from engine.data.corpus import CorpusOptions, prepare_corpus
from engine.data.prepare import prepare_builtin, prepare_corpus_file
from engine.errors import DataError, LayerLabError
from engine.evaluate import evaluate_run
from engine.linter import lint
from engine.portable import decode_tokens, encode_corpus
from engine.predict import generate_text, load_predictor, predict_table
from engine.runs import create_run, execute
from engine.templates import build, starter_for
from tests.test_bundle import run_isolated, unzip
from tests.test_cli import run_cli


def test_a_text_becomes_next_token_windows_split_by_position(workspace):
    text = _tales(400, 0.0, np.random.default_rng(0))
    ds = prepare_corpus(text, CorpusOptions(context=32), name="t", source="t")
    x, y = ds.split("train")
    assert x.shape[1:] == (32,) and y.dtype.is_floating_point is False
    assert (x[:, 1:].long() == y[:, :-1]).all()  # the targets are the window one token later
    cut = int(len(text) * 0.8)
    assert decode_tokens(x[0].long().tolist(), ds.meta) == text[:32]
    assert decode_tokens(ds.split("val")[0][0].long().tolist(), ds.meta) == text[cut : cut + 32]
    assert ds.meta["vocab"][0] == "<unk>" and set(ds.meta["vocab"][1:]) == set(text[:cut])
    # words: punctuation marks are tokens of their own, and come back without a space before them
    words = prepare_corpus(text, CorpusOptions(tokens="word", context=16), name="w", source="t")
    ids = encode_corpus("the cat ran to the castle. there", words.meta)
    assert decode_tokens(ids, words.meta) == "the cat ran to the castle. there"
    assert encode_corpus("a zebra", words.meta)[-1] == 0  # outside the vocabulary: <unk>


def test_a_text_too_short_for_its_context_says_what_to_change(workspace):
    with pytest.raises(DataError, match="too few for a context of 64.*Bring at least 650"):
        prepare_corpus("hello world. " * 20, CorpusOptions(context=64), name="s", source="t")
    with pytest.raises(DataError, match="holds binary data, not text"):
        prepare_corpus_file(b"\x89PNG\r\n\x1a\n\x00\x00" * 100, "picture.txt", CorpusOptions())
    with pytest.raises(DataError, match="holds no text to learn from"):
        prepare_corpus_file(b"  \n\n ", "blank.txt", CorpusOptions())


def test_a_small_model_learns_far_below_the_unigram_entropy_and_writes(workspace):
    ds = prepare_builtin("tales", n_samples=500)
    run = create_run(build("lstm_lm", ds.meta), {"epochs": 4, "lr": 0.003}, ds.path)
    finished = execute(run)
    train_text = decode_tokens(ds.split("train")[1].flatten().tolist(), ds.meta)
    counts = np.array(list(Counter(train_text).values()), float)
    unigram = -(counts / counts.sum() * np.log2(counts / counts.sum())).sum()  # bits per character
    assert finished["metrics"]["val/bits_per_token"] < 0.5 * unigram, (finished["metrics"], unigram)
    report = evaluate_run(run)
    assert report["summary"]["bits_per_token"] < 0.5 * report["summary"]["unigram_bits_per_token"]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    samples = [e for e in events if e["type"] == "sample"]
    assert samples and samples[-1]["text"]  # written live, and at the end

    model, meta = load_predictor(run)
    text = generate_text(model, meta, "the cat ", length=120, temperature=0.5)
    assert len(text) == 120 and "there it found" in text  # the tales' own phrase, learned
    assert text == generate_text(model, meta, "the cat ", length=120, temperature=0.5)  # seeded
    with pytest.raises(LayerLabError, match="temperature must be above 0"):
        generate_text(model, meta, "x", temperature=0)
    with pytest.raises(LayerLabError, match="generates text: give it a prompt"):
        predict_table(model, meta, __import__("pandas").DataFrame({"a": [1]}))


def test_the_linter_catches_a_language_model_that_sees_ahead(workspace):
    ds = prepare_builtin("tales", n_samples=300)
    spec = starter_for(ds.meta)
    assert [n["op"] for n in spec["nodes"]][-2:] == ["transformer_encoder", "linear"] and not lint(
        spec, ds.meta, {}
    )
    spec["nodes"][2]["params"]["causal"] = False
    (finding,) = lint(spec, ds.meta, {})
    assert finding.rule == "sees_ahead" and "has no causal mask" in finding.message
    fixed, _ = finding.fix(spec, {})
    assert not lint(fixed, ds.meta, {})
    lstm = build("lstm_lm", ds.meta)
    lstm["nodes"][1]["params"]["bidirectional"] = True
    assert [f.rule for f in lint(lstm, ds.meta, {})] == ["sees_ahead"]


def test_language_models_from_the_command_line_and_the_bundle(tmp_path):
    corpus = tmp_path / "tales.txt"
    corpus.write_text(_tales(400, 0.0, np.random.default_rng(1)))
    refused = run_cli("train", "--data", corpus, "--tokens", "word", "--out", tmp_path / "no")
    assert refused.returncode == 2 and "--tokens is for --task language_model" in refused.stderr
    proc = run_cli(
        "train", "--data", corpus, "--task", "language_model", "--context", "32", "--epochs", "2",
        "--out", tmp_path / "run",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    finished = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "val/bits_per_token" in finished["metrics"]
    written = run_cli("generate", tmp_path / "run", "--prompt", "the ", "--length", "50")
    assert written.returncode == 0 and len(written.stdout.rstrip("\n")) >= 40, written.stderr
    proc = run_cli("export", tmp_path / "run", "--format", "bundle", "--out", tmp_path / "b.zip")
    assert proc.returncode == 0, proc.stderr[-2000:]
    unzip((tmp_path / "b.zip").read_bytes(), tmp_path / "bundle")
    alone = run_isolated(tmp_path / "bundle", "generate.py", "--prompt", "the ", "--length", "50")
    assert (
        alone.stdout == written.stdout
    )  # the same tokens, vocabulary and sampling outside LayerLab
    refused = run_isolated(tmp_path / "bundle", "predict.py", corpus, returncode=2)
    assert "run generate.py" in refused.stderr
