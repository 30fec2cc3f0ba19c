"""Example 2: capture activations and train a sparse autoencoder (about a minute on a CPU).

Saves the run `examples` and the SAE `examples-sae` in ./microw_store (or $MICROW_STORE); examples 3 and 4 use them.

    python examples/02_capture_and_train.py
"""

from microw_core import load_model
from microw_core.capture import CaptureConfig, capture, open_run
from microw_core.sae import TrainConfig
from microw_core.sae.pipeline import train_sae
from microw_core.store import Store

LAYER = "resid_post.2"

lm = load_model("demo")
store = Store()
if any(run["name"] == "examples" for run in store.list_runs()):
    store.delete_run("examples")  # start afresh each time the example runs

# Capture 20,000 tokens of demo stories at one layer (BOS and padding are never stored).
summary = capture(lm, "demo", CaptureConfig(layers=[LAYER], max_tokens=20_000), store, run="examples")
print(f"captured {summary['tokens']:,} tokens at {summary['tokens_per_s']:,.0f} tokens/s into {store.root}")

run = open_run(store, "examples")
meta, texts = run.meta(), run.texts()
print("row 0 is", repr(lm.tokenizer.decode([int(meta["token_ids"][0])])), "in:", texts[int(meta["doc_index"][0])][:60])

# Train a TopK SAE: 768 features (4 x d_model), 16 active per token; 10% of the run is held out for the metrics.
def progress(record: dict) -> None:
    if record["step"] % 50 == 0:
        print(f"  step {record['step']:>4}: explained variance {record['explained_variance']:.3f}, L0 {record['l0']:.1f}")

config = TrainConfig(arch="topk", width=768, k=16, tokens=150_000, batch_size=1024)
trained = train_sae(store, "examples", LAYER, config, name="examples-sae", lm=lm, progress=progress)

m = trained.metrics
print(f"SAE '{trained.name}' on {m['heldout_tokens']:,} held-out tokens:")
print(f"  explained variance {m['explained_variance']:.3f}, L0 {m['l0']:.1f}, dead {m['dead_fraction']:.1%}, "
      f"dense {m['dense_fraction']:.1%}")
print(f"  CE loss recovered {m['ce_loss_recovered']:.3f} (1 = as good as the model itself), KL {m['kl']:.3f}")
