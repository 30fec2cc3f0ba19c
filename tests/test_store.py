import json
import os

import pandas as pd
import pytest
import torch

from microw_core.errors import StoreCorruptError, StoreError
from microw_core.store import FileRecord, Store, safe_name


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


def test_default_root_is_env_or_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MICROW_STORE", raising=False)
    assert Store().root == tmp_path / "microw_store"
    monkeypatch.setenv("MICROW_STORE", str(tmp_path / "elsewhere"))
    assert Store().root == tmp_path / "elsewhere"
    assert Store(tmp_path / "arg").root == tmp_path / "arg"
    assert not (tmp_path / "microw_store").exists()  # created lazily


def test_json_round_trip(store):
    obj = {"name": "r", "layers": ["resid_post.0"], "tokens": 12, "nested": {"x": [1.5, None]}}
    record = store.write_json("runs/r/manifest.json", obj)
    assert store.read_json("runs/r/manifest.json") == obj
    assert record.path == "runs/r/manifest.json"
    assert record.bytes == (store.root / "runs/r/manifest.json").stat().st_size
    assert store.read_json(record.path, sha256=record.sha256) == obj


def test_jsonl_round_trip(store):
    rows = [{"doc_index": 0, "text": "héllo\nworld"}, {"doc_index": 1, "text": "x"}]
    store.write_jsonl("runs/r/texts.jsonl", rows)
    assert store.read_jsonl("runs/r/texts.jsonl") == rows


def test_tensor_round_trip_with_checksum(store):
    tensors = {"activations": torch.randn(5, 3), "token_ids": torch.arange(5), "t": torch.randn(4, 4).t()}
    record = store.write_tensors("runs/r/shards/00000.resid_post.0.safetensors", tensors, {"layer": "resid_post.0"})
    assert isinstance(record, FileRecord) and len(record.sha256) == 64
    assert FileRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    out = store.read_tensors(record.path, sha256=record.sha256)
    assert set(out) == set(tensors)
    for key in tensors:
        assert torch.equal(out[key], tensors[key])


def test_table_round_trip(store):
    df = pd.DataFrame({"feature": [0, 1, 2], "label": ["a", "b", None], "score": [0.5, 1.0, 2.5]})
    store.write_table("saes/s/features/stats.parquet", df)
    pd.testing.assert_frame_equal(store.read_table("saes/s/features/stats.parquet"), df)


def test_failed_write_leaves_old_file_intact(store):
    store.write_json("jobs/j.json", {"state": "old"})
    with pytest.raises(TypeError):  # not JSON-serialisable: fails before anything is written
        store.write_json("jobs/j.json", {"state": object()})
    with pytest.raises(TypeError):  # fails while writing the temp file, after it was created
        store.write_bytes("jobs/j.json", "a str, not bytes")
    assert store.read_json("jobs/j.json") == {"state": "old"}
    assert [p.name for p in (store.root / "jobs").iterdir()] == ["j.json"]  # no temp files left behind


def test_interrupted_write_keeps_old_tensors(store):
    record = store.write_tensors("saes/s/sae.safetensors", {"w": torch.ones(3)})
    with pytest.raises(AttributeError):  # a bad value must not clobber the good file
        store.write_tensors("saes/s/sae.safetensors", {"w": "not a tensor"})
    assert torch.equal(store.read_tensors("saes/s/sae.safetensors", record.sha256)["w"], torch.ones(3))
    assert sorted(p.name for p in (store.root / "saes/s").iterdir()) == ["sae.safetensors"]


def test_checksum_mismatch_is_corrupt(store):
    record = store.write_tensors("runs/r/shards/00000.meta.safetensors", {"token_ids": torch.arange(100)})
    path = store.root / record.path
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip bits in the tensor data: still a valid file, but wrong numbers
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError) as e:
        store.read_tensors(record.path, sha256=record.sha256)
    message = str(e.value)
    assert "00000.meta.safetensors" in message and "checksum" in message
    assert "delete the run 'r'" in message.lower() and "capture again" in message


def test_truncated_tensors_are_corrupt_even_without_checksum(store):
    record = store.write_tensors("saes/s/sae.safetensors", {"w": torch.randn(64, 8)})
    path = store.root / record.path
    path.write_bytes(path.read_bytes()[: record.bytes // 2])
    with pytest.raises(StoreCorruptError, match="sae.safetensors") as e:
        store.read_tensors(record.path)
    assert "train it again" in str(e.value)
    with pytest.raises(StoreCorruptError):
        store.read_tensors(record.path, sha256=record.sha256)


def test_garbled_json_and_parquet_are_corrupt(store):
    store.write_json("runs/r/manifest.json", {"a": 1})
    (store.root / "runs/r/manifest.json").write_text('{"a": 1')
    with pytest.raises(StoreCorruptError, match="manifest.json"):
        store.read_json("runs/r/manifest.json")
    store.write_table("saes/s/t.parquet", pd.DataFrame({"x": [1, 2]}))
    (store.root / "saes/s/t.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(StoreCorruptError, match="t.parquet"):
        store.read_table("saes/s/t.parquet")


def test_missing_files(store):
    with pytest.raises(StoreError, match="does not exist") as e:
        store.read_json("runs/nothing/manifest.json")
    assert not isinstance(e.value, StoreCorruptError)
    # A file a manifest recorded (so a checksum is known) but that has gone is damage.
    with pytest.raises(StoreCorruptError, match="missing"):
        store.read_tensors("runs/r/shards/00000.x.safetensors", sha256="0" * 64)


@pytest.mark.parametrize(
    "name,expected",
    [("my run", "my_run"), ("../x", "_x"), ("a/../../b", "a_b"), ("/etc", "_etc"),
     ("gpt2:resid_post.3", "gpt2_resid_post.3"), (".hidden", "hidden"), ("x" * 300, "x" * 100)],
)
def test_safe_name_sanitises(name, expected):
    result = safe_name(name)
    assert result == expected
    assert "/" not in result and ".." not in result and not result.startswith(".")


@pytest.mark.parametrize("name", ["", "..", "...", "/", "___"])
def test_safe_name_rejects_empty(name):
    with pytest.raises(StoreError):
        safe_name(name)


@pytest.mark.parametrize(
    "relpath", ["../x.json", "/etc/passwd", "runs/../../x.json", "a/../../b.json", "C:/x.json", ""]
)
def test_paths_cannot_escape_root(store, relpath, tmp_path):
    with pytest.raises(StoreError):
        store.write_json(relpath, {"x": 1})
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "b.json").exists()


def test_path_parts_are_sanitised_within_root(store):
    for parts in [("runs", "../x"), ("runs", "a/../../b"), ("saes", "/etc")]:
        assert store.path(*parts).is_relative_to(store.root)


def test_symlink_out_of_store_is_refused(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "runs").mkdir(parents=True)
    os.symlink(outside, store.root / "runs" / "evil")
    with pytest.raises(StoreError, match="outside the store"):
        store.write_json("runs/evil/manifest.json", {})
    with pytest.raises(StoreError):
        store.delete_run("evil")
    assert outside.exists()


def _make_run(store, name, tokens=3):
    rec = store.write_tensors(f"runs/{name}/shards/00000.meta.safetensors", {"token_ids": torch.arange(tokens)})
    manifest = {"name": name, "model": "demo", "tokens": tokens, "complete": True,
                "shards": [{"index": 0, "tokens": tokens, "files": {"meta": rec.to_dict()}}]}
    store.write_json(f"runs/{name}/manifest.json", manifest)
    return rec


def test_list_inspect_delete_runs(store):
    assert store.list_runs() == []
    _make_run(store, "a")
    rec = _make_run(store, "b", tokens=5)
    (store.root / "runs" / "half").mkdir()  # an interrupted capture: no manifest yet
    runs = {r["name"]: r for r in store.list_runs()}
    assert set(runs) == {"a", "b", "half"}
    assert runs["b"]["tokens"] == 5 and runs["b"]["bytes"] > 0
    assert runs["half"]["complete"] is False and "missing" in runs["half"]["error"]

    assert store.inspect_run("b", verify=True)["problems"] == []
    (store.root / rec.path).write_bytes(b"garbage")
    problems = store.inspect_run("b", verify=True)["problems"]
    assert len(problems) == 1 and "checksum" in problems[0]

    store.delete_run("a")
    assert {r["name"] for r in store.list_runs()} == {"b", "half"}
    assert (store.root / "runs" / "b" / "manifest.json").exists()  # nothing else touched
    with pytest.raises(StoreError, match="no run 'a'"):
        store.delete_run("a")
    with pytest.raises(StoreError):
        store.inspect_run("nope")


def test_delete_escape_attempts_stay_inside(store, tmp_path):
    _make_run(store, "keep")
    victim = tmp_path / "victim"
    victim.mkdir()
    for name in ["../victim", "../../victim", "/tmp", "keep/../.."]:
        with pytest.raises(StoreError):
            store.delete_run(name)
    assert victim.exists() and (store.root / "runs/keep/manifest.json").exists()


def test_list_and_delete_saes_and_jobs(store):
    store.write_json("saes/s1/config.json", {"arch": "topk", "width": 64})
    store.write_json("saes/s1/metrics.json", {"l0": 8.0})
    store.write_json("saes/s2/config.json", {"arch": "relu"})
    store.write_json("saes/broken/config.json", {})
    (store.root / "saes/broken/config.json").write_text("{")
    saes = {s["name"]: s for s in store.list_saes()}
    assert saes["s1"]["config"]["arch"] == "topk" and saes["s1"]["metrics"] == {"l0": 8.0}
    assert saes["s2"]["metrics"] is None
    assert "error" in saes["broken"]
    assert store.inspect_sae("s1")["config"]["width"] == 64
    store.delete_sae("s2")
    assert {s["name"] for s in store.list_saes()} == {"s1", "broken"}

    store.write_json("jobs/job-1.json", {"state": "done"})
    store.write_json("jobs/job-2.json", {"state": "running"})
    assert [j["id"] for j in store.list_jobs()] == ["job-1", "job-2"]
    assert store.read_job("job-2") == {"state": "running"}
    store.delete_job("job-1")
    assert [j["id"] for j in store.list_jobs()] == ["job-2"]
    with pytest.raises(StoreError):
        store.delete_job("job-1")
