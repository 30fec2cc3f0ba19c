"""Example 3: feature cards, naming concepts, and the check against the demo's planted concepts (about a minute).

Needs the SAE `examples-sae` from example 2 in ./microw_store (or $MICROW_STORE).

    python examples/03_features_and_concepts.py
"""

import sys

from microw_core import load_model
from microw_core.concepts import ConceptDictionary, evaluate_concepts
from microw_core.errors import StoreError
from microw_core.features import FeatureConfig, compute_features, feature_card, load_feature_table, what_fires
from microw_core.sae import load_sae
from microw_core.store import Store

store = Store()
try:
    sae = load_sae(store, "examples-sae")
except StoreError as error:
    sys.exit(f"{error}\nRun examples/02_capture_and_train.py first.")
lm = load_model(sae.cfg.model)

# One pass over fresh demo stories fills every feature's card.
summary = compute_features(lm, sae, "demo", store, "examples-sae", FeatureConfig(max_tokens=20_000))
print(f"{summary['alive']} of {summary['features']} features fired on {summary['tokens']:,} tokens")

table = load_feature_table(store, "examples-sae")
print("\nmost frequent features and their suggested labels:")
print(table.sort_values("density", ascending=False)[["feature", "density", "max_activation", "label"]].head(5)
      .to_string(index=False))

# Which features fire on "beach"? Read the strongest one's card.
beach = next(t for t in what_fires(lm, sae, "Mia ran down to the beach.") if t["token"] == " beach")
feature = beach["features"][0][0]
card = feature_card(store, "examples-sae", feature)
print(f"\nfeature {feature} (label {card['label']!r}) fires on {card['density']:.2%} of tokens; top contexts:")
for context in card["top_contexts"][:4]:
    tokens = list(context["tokens"])
    tokens[context["highlight"]] = f"[[{tokens[context['highlight']]}]]"
    print(f"  {context['value']:6.2f}  {''.join(tokens)}")

# Name it in the SAE's concept dictionary (the app's Features and Concepts pages show the same names).
concepts = ConceptDictionary.load(store, "examples-sae")
concepts.set(feature, name="beach", description="fires on the word beach and its neighbours", tags=["ocean"])
print("\nconcepts:", [(c.feature, c.name) for c in concepts.entries])

# Ground truth: the best single feature for each planted concept, against the best single neuron.
result = evaluate_concepts(lm, sae, store, "examples-sae", n_stories=50)
print(f"\nmean best F1 over {result['concepts']} concepts: features {result['mean_best_f1']:.2f}, "
      f"neurons {result['neuron_mean_best_f1']:.2f}")
for row in sorted(result["per_concept"], key=lambda r: -r["f1"])[:5]:
    print(f"  {row['concept']:<12} feature {row['feature']:>4}  F1 {row['f1']:.2f}  (neuron {row['neuron_f1']:.2f})")
