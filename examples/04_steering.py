"""Example 4: steer the demo model with an SAE feature and with a contrastive (CAA) vector (under a minute).

Needs the SAE `examples-sae` from example 2 (and, for strengths in max-activation units, the feature cards of
example 3; without them the units are estimated from the SAE's run).

    python examples/04_steering.py
"""

import sys

from microw_core import load_model
from microw_core.demo.corpus import classify_topic
from microw_core.errors import StoreError
from microw_core.sae import load_sae
from microw_core.steering import (FeatureEdit, SteeringConfig, caa_vector, compare, control_hook, steer,
                                  topic_features)
from microw_core.store import Store

store = Store()
try:
    sae = load_sae(store, "examples-sae")
except StoreError as error:
    sys.exit(f"{error}\nRun examples/02_capture_and_train.py first.")
lm = load_model(sae.cfg.model)
prompt = "One day Tom"

# The feature that is most active on castle stories compared with every other topic.
castle = topic_features(lm, sae, topics=["castle"], stories_per_topic=10)["castle"]["feature"]
print("castle feature:", castle)

# Add it at a few strengths (multiples of its largest activation); 0 is the unsteered baseline.
config = SteeringConfig(max_new_tokens=30)
for strength in (0.0, 1.0, 2.0):
    result = steer(lm, sae, [FeatureEdit(castle, strength)], prompt, config, store=store, sae_name="examples-sae",
                   concept_names={castle: "castle"})
    print(f"add {strength}: {result['steered']}")
print("prompt-only baseline:", result["prompt_baseline_prompt"], "->", result["prompt_baseline"])

# Clamp holds the feature at a level; the trace shows its activation at every generated token.
held = steer(lm, sae, [FeatureEdit(castle, 1.0, method="clamp")], prompt, config, store=store, sae_name="examples-sae")
print("clamp 1.0:", held["steered"])
print("  activation trace:", [round(v, 1) for v in held["activations"][castle][:8]])

# A CAA vector needs no SAE: mean activation on castle sentences minus the mean on other sentences.
castle_texts = ["The knight rode across the drawbridge.", "The king sat on his throne in the castle.",
                "Guards stood on the battlements of the tower.", "The princess walked through the great hall."]
other_texts = ["The waves crashed on the beach.", "Tom baked bread in the kitchen.",
               "The rocket flew into space.", "The cows walked across the farm."]
vector = caa_vector(lm, "resid_post.2", castle_texts, other_texts, aggregate="mean")
pair = compare(lm, prompt, [control_hook("add", "resid_post.2", vector, strength=2.0)],
               SteeringConfig(max_new_tokens=30, temperature=1.0, seed=0))
print("CAA baseline:", pair["baseline"])
print("CAA steered: ", pair["steered"], "| classified as:", classify_topic(pair["steered"]))
