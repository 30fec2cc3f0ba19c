import json

import pandas as pd
import pytest
from tiny_models import char_tokenizer

from microw_core.datasets import DatasetSpec, iter_texts, load_texts, tokenize_windows
from microw_core.errors import DatasetError, InvalidInputError

TEXTS = ["The cat sat.", "A dog ran, fast.", "Birds sing\tat dawn.", "Fish swim.", "Ünïcode wörks ✓"]


def write_all_formats(folder):
    """The same texts, with an extra `label` column, in every supported file format."""
    rows = [{"text": t, "label": i} for i, t in enumerate(TEXTS)]
    df = pd.DataFrame(rows)
    paths = {
        "txt": folder / "d.txt",
        "jsonl": folder / "d.jsonl",
        "json": folder / "d.json",
        "csv": folder / "d.csv",
        "tsv": folder / "d.tsv",
        "parquet": folder / "d.parquet",
    }
    paths["txt"].write_text("\n".join(t.replace("\t", " ") for t in TEXTS) + "\n", encoding="utf-8")
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    paths["json"].write_text(json.dumps(rows), encoding="utf-8")
    df.to_csv(paths["csv"], index=False)
    df.to_csv(paths["tsv"], index=False, sep="\t")
    df.to_parquet(paths["parquet"], index=False)
    return paths


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "json", "csv", "tsv", "parquet"])
def test_every_format_loads(tmp_path, fmt):
    path = write_all_formats(tmp_path)[fmt]
    expected = [t.replace("\t", " ") for t in TEXTS] if fmt == "txt" else TEXTS
    assert load_texts(str(path)) == expected
    assert list(iter_texts(DatasetSpec.parse(str(path)))) == expected


def test_json_variants(tmp_path):
    (tmp_path / "strings.json").write_text(json.dumps(["a", "b"]))
    (tmp_path / "columns.json").write_text(json.dumps({"text": ["a", "b"], "id": [1, 2]}))
    (tmp_path / "lines.json").write_text('{"text": "a"}\n{"text": "b"}\n')  # JSON lines named .json
    for name in ["strings.json", "columns.json", "lines.json"]:
        assert load_texts(str(tmp_path / name)) == ["a", "b"]


def test_paragraphs_option(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("First line\nsame paragraph.\n\n\nSecond paragraph.\n  \nThird\n", encoding="utf-8")
    assert load_texts(str(path), paragraphs=True) == ["First line\nsame paragraph.", "Second paragraph.", "Third"]
    assert load_texts(str(path)) == ["First line", "same paragraph.", "Second paragraph.", "Third"]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_text_column_option_and_wrong_column(tmp_path, fmt):
    path = write_all_formats(tmp_path)[fmt]
    renamed = tmp_path / f"renamed.{fmt}"
    if fmt == "parquet":
        pd.read_parquet(path).rename(columns={"text": "body"}).to_parquet(renamed, index=False)
    else:
        renamed.write_text(path.read_text(encoding="utf-8").replace('"text"', '"body"').replace("text,", "body,"),
                           encoding="utf-8")
    assert load_texts(str(renamed), text_column="body") == TEXTS
    with pytest.raises(DatasetError) as e:
        load_texts(str(renamed))
    message = str(e.value)
    assert "no column 'text'" in message and "body" in message and "label" in message


def test_non_text_column_is_an_error(tmp_path):
    path = write_all_formats(tmp_path)["parquet"]
    with pytest.raises(DatasetError, match="holds int"):
        load_texts(str(path), text_column="label")


def test_blank_and_missing_values_are_skipped(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": ""}\n{"text": null}\n{"text": "   "}\n{"text": "b"}\n')
    assert load_texts(str(path)) == ["a", "b"]


@pytest.mark.parametrize("name,content", [("empty.txt", ""), ("blank.txt", "\n \n\n"), ("empty.jsonl", ""),
                                          ("empty.csv", ""), ("header.csv", "text,label\n")])
def test_empty_file_is_an_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetError, match="contains no texts"):
        load_texts(str(path))


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_texts(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DatasetError, match="does not exist"):
        iter_texts("./no/such/file.txt")  # raised on the call, before iterating


def test_non_utf8_file_is_an_error(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café crème\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_texts(str(path))


def test_unreadable_files_are_errors(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": broken\n')
    with pytest.raises(DatasetError, match="Line 2 .* not valid JSON"):
        load_texts(str(tmp_path / "bad.jsonl"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatasetError, match="not a readable parquet"):
        load_texts(str(tmp_path / "bad.parquet"))
    (tmp_path / "data.xml").write_text("<a/>")
    with pytest.raises(DatasetError, match="unsupported file type"):
        load_texts(str(tmp_path / "data.xml"))
    (tmp_path / "plain_folder").mkdir()
    with pytest.raises(DatasetError, match="save_to_disk"):
        load_texts(str(tmp_path / "plain_folder"))


def test_shuffle_is_seeded(tmp_path):
    path = tmp_path / "many.txt"
    path.write_text("\n".join(f"text {i}" for i in range(200)))
    ordered = load_texts(str(path))
    a = load_texts(str(path), shuffle=True, seed=1)
    assert a == load_texts(str(path), shuffle=True, seed=1)
    assert a != load_texts(str(path), shuffle=True, seed=2)
    assert a != ordered and sorted(a) == sorted(ordered)
    # A small buffer still yields every text exactly once.
    b = load_texts(str(path), shuffle=True, seed=1, shuffle_buffer=10)
    assert b != ordered and sorted(b) == sorted(ordered)


def test_max_texts_and_max_tokens(tmp_path):
    path = tmp_path / "many.txt"
    path.write_text("\n".join(f"text {i:03d}" for i in range(100)))  # 8 chars -> 9 tokens with BOS
    assert load_texts(str(path), max_texts=3) == ["text 000", "text 001", "text 002"]
    assert len(load_texts(str(path), max_texts=5, shuffle=True)) == 5
    tok = char_tokenizer()
    assert len(load_texts(str(path), tokenizer=tok, max_tokens=27)) == 3
    assert len(load_texts(str(path), tokenizer=tok, max_tokens=28)) == 4  # the text that crosses the limit is kept
    assert len(load_texts(str(path), tokenizer=tok, max_tokens=20, max_length=5)) == 4  # counts truncated windows
    with pytest.raises(DatasetError, match="needs a tokenizer"):
        load_texts(str(path), max_tokens=10)


def test_iter_texts_stops_reading_early(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\nthis line is broken\n')
    assert load_texts(str(path), max_texts=2) == ["a", "b"]  # never reaches the broken line


def test_save_to_disk_folder(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"text": TEXTS, "label": list(range(len(TEXTS)))})
    ds.save_to_disk(str(tmp_path / "single"))
    assert load_texts(str(tmp_path / "single")) == TEXTS
    assert DatasetSpec.parse(str(tmp_path / "single")).kind == "disk"

    dd = datasets.DatasetDict({"train": ds, "test": ds.select([0, 1])})
    dd.save_to_disk(str(tmp_path / "dict"))
    assert load_texts(str(tmp_path / "dict")) == TEXTS
    assert load_texts(str(tmp_path / "dict"), split="test") == TEXTS[:2]
    with pytest.raises(DatasetError, match="no split 'dev'.*train, test"):
        load_texts(str(tmp_path / "dict"), split="dev")
    with pytest.raises(DatasetError, match="no column 'body'.*text, label"):
        load_texts(str(tmp_path / "single"), text_column="body")


def test_hub_offline_gives_clear_error(tmp_path):
    # conftest sets HF_HUB_OFFLINE=1, so this never touches the network.
    with pytest.raises(DatasetError) as e:
        load_texts("hub:microw-tests/no-such-dataset", max_texts=3)
    message = str(e.value)
    assert "microw-tests/no-such-dataset" in message
    assert "HF_HUB_OFFLINE" in message or "network" in message


def test_spec_parsing_and_round_trip(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    assert DatasetSpec.parse("demo").kind == "demo"
    assert DatasetSpec.parse("hub:org/name").kind == "hub"
    assert DatasetSpec.parse("hub:org/name").source == "org/name"
    assert DatasetSpec.parse("roneneldan/TinyStories").kind == "hub"  # a plain name that is not a local path
    assert DatasetSpec.parse("data/missing.jsonl").kind == "file"    # looks local: never sent to the hub
    assert DatasetSpec.parse(str(folder)).kind == "disk"
    spec = DatasetSpec.parse("hub:org/name", config="en", split="validation", max_texts=10, shuffle=True, seed=3)
    data = json.loads(json.dumps(spec.to_dict()))
    assert DatasetSpec.from_dict(data) == spec
    with pytest.raises(DatasetError, match="Unknown dataset option"):
        DatasetSpec.from_dict({**data, "colour": "red"})
    with pytest.raises(InvalidInputError):
        DatasetSpec.parse("demo", max_texts=0)
    with pytest.raises(InvalidInputError, match="max_length"):
        DatasetSpec.parse("demo", pack=True)


def test_truncation_windows():
    tok = char_tokenizer()
    windows = tokenize_windows(["abcdef", "xy"], tok, max_length=4)
    assert [len(w.input_ids) for w in windows] == [4, 3]
    assert windows[0].input_ids[0] == tok.bos_token_id
    assert windows[0].doc_index == [0, 0, 0, 0] and windows[1].doc_index == [1, 1, 1]
    assert windows[1].position == [0, 1, 2]
    assert tok.decode(windows[0].input_ids, skip_special_tokens=True) == "abc"
    assert [len(w.input_ids) for w in tokenize_windows(["abcdef"], tok)] == [7]  # no max_length: whole text


def test_packing_windows():
    tok = char_tokenizer()
    texts = ["abcdefg", "hij", "klmnopqrstu"]
    windows = tokenize_windows(texts, tok, max_length=8, pack=True)
    assert all(len(w.input_ids) == 8 for w in windows[:-1]) and 0 < len(windows[-1].input_ids) <= 8
    assert all(w.input_ids[0] == tok.bos_token_id for w in windows)  # every window starts with BOS
    # Every token of every text appears exactly once, in order, and maps back to its text.
    real = [(d, p, i) for w in windows for i, d, p in zip(w.input_ids, w.doc_index, w.position) if p >= 0]
    for doc, text in enumerate(texts):
        ids = [i for d, _, i in real if d == doc]
        assert tok.decode(ids, skip_special_tokens=True) == text
        assert [p for d, p, _ in real if d == doc] == list(range(len(text) + 2))  # BOS + chars + EOS
    eos_count = sum(w.input_ids.count(tok.eos_token_id) for w in windows)
    assert eos_count == len(texts)  # texts are separated by EOS
    with pytest.raises(InvalidInputError, match="max_length"):
        tokenize_windows(texts, tok, pack=True)


def test_demo_source():
    from microw_core.demo.corpus import generate_stories

    texts = load_texts("demo", max_texts=5)
    assert texts == [s.text for s in generate_stories(5)]
    assert load_texts("demo", max_texts=5, seed=1) != texts
    test_texts = load_texts("demo", split="test", max_texts=3)
    assert test_texts == [s.text for s in generate_stories(3, split="test")]
    assert not set(test_texts) & set(load_texts("demo", max_texts=50))
    assert load_texts("demo", max_texts=5, shuffle=True) == texts  # already a seeded random draw
    assert len(load_texts("demo", tokenizer=char_tokenizer(), max_tokens=500)) >= 2
    with pytest.raises(DatasetError, match="no split 'dev'"):
        load_texts("demo", split="dev", max_texts=1)
