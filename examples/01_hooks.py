"""Example 1: the hooks system on the demo model (a few seconds on a CPU).

Record a layer, stop a forward pass early, edit activations with a controller, and write a detector of your own.

    python examples/01_hooks.py
"""

import torch

from microw_core import generate, load_model
from microw_core.hooks import ActivationRecorder, AddVector, Detector, FunctionController

lm = load_model("demo")
batch = lm.tokenize(["Mia ran down to the beach.", "The knight rode to the castle."])

# 1. Record the residual stream after block 2 (a detector: the model's output is unchanged).
recorder = ActivationRecorder("resid_post.2")
with lm.hooks(recorder):
    lm.forward(**batch)
activation = recorder.last  # [batch, tokens, d_model] on the CPU
real = batch["attention_mask"].bool()  # padding is not text
print("recorded", tuple(activation.shape), "->", int(real.sum()), "real token positions")

# 2. Stop early: nothing after block 0 is computed, and lm.forward returns None.
early = ActivationRecorder("resid_post.0", stop_forward=True)
with lm.hooks(early):
    print("output when stopped early:", lm.forward(**batch), "| recorded", tuple(early.last.shape))

# 3. A controller changes what the rest of the model sees: remove block 1's MLP output.
plain = lm.forward(**batch).logits
with lm.hooks(FunctionController("mlp_out.1", lambda ctx, act: torch.zeros_like(act))):
    ablated = lm.forward(**batch).logits
change = (ablated.softmax(-1) - plain.softmax(-1)).abs().sum(-1)[real].mean()
print(f"zeroing mlp_out.1 moves the next-token distribution by {change:.2f} (total variation x2) on average")

# 4. Steer generation with a vector: the mean ocean activation minus the mean castle activation.
def mean_activation(text: str) -> torch.Tensor:
    rec = ActivationRecorder("resid_post.2", stop_forward=True)
    with lm.hooks(rec):
        lm.forward(**lm.tokenize([text]))
    return rec.last[0, 1:].mean(0)  # skip the BOS token

direction = mean_activation("The waves crashed on the sandy beach by the sea.") - mean_activation(
    "The king and the knight stood in the castle tower.")
for scale in (0.0, 1.0):
    text = generate(lm, "One day Tom", max_new_tokens=25, hooks=(AddVector("resid_post.2", direction, scale),)).text
    print(f"scale {scale}: One day Tom{text}")


# 5. A detector of your own: the largest activation norm per layer, over real non-special tokens.
class MaxNorm(Detector):
    def __init__(self, layer: str):
        super().__init__(layer)
        self.value = 0.0

    def observe(self, ctx, activation):
        keep = ctx.attention_mask.bool() if ctx.attention_mask is not None else torch.ones(activation.shape[:2], dtype=torch.bool)
        keep &= ~torch.isin(ctx.input_ids, torch.tensor(sorted(lm.special_token_ids)))
        self.value = max(self.value, float(activation[keep].norm(dim=-1).max()))


detectors = [MaxNorm(f"resid_post.{i}") for i in range(lm.n_layers)]
with lm.hooks(*detectors):
    lm.forward(**batch)
print("largest norm per block:", [round(d.value, 1) for d in detectors])
