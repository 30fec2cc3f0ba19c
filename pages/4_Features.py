"""Features: the table of an SAE's features, a feature card, naming, and what fires on your text."""

import pandas as pd
import streamlit as st

from microw_core import pipeline, ui
from microw_core.concepts import ConceptDictionary
from microw_core.datasets import DatasetSpec
from microw_core.errors import MicrowError
from microw_core.features import FeatureConfig, encode_text, feature_card, load_feature_table, what_fires

st.title("Features")
store = ui.store()
picked = ui.sae_picker()
if picked is None:
    st.stop()
sae_name, info = picked
cfg = info["config"]
has_cards = store.exists(f"saes/{sae_name}/features/meta.json")


def compute_form(expanded: bool) -> None:
    """Start the feature pass: one pass of model + SAE over a dataset fills every card."""
    run_dataset = None
    if cfg.get("run") and store.exists(f"runs/{cfg['run']}/manifest.json"):
        run_dataset = store.read_json(f"runs/{cfg['run']}/manifest.json").get("dataset")
    with st.expander("Compute feature cards" if not has_cards else "Recompute feature cards", expanded=expanded):
        source = st.text_input("Dataset", value=(run_dataset or {}).get("source", "demo"), key="feat_dataset",
                               help="'demo', a file or folder path, or hub:<name>. Default: the SAE's training data.")
        tokens = st.number_input("Token budget", 1_000, 10_000_000, 60_000, step=10_000, key="feat_tokens")
        if st.button("Compute feature cards", type="primary", key="feat_compute"):
            lm = ui.model(cfg.get("model"))
            if lm is None:
                return
            try:
                same = run_dataset and run_dataset.get("source") == source
                spec = DatasetSpec.from_dict(run_dataset) if same else DatasetSpec.parse(source)
                task = pipeline.features_task(lm, ui.sae(sae_name, lm), spec, store, sae_name,
                                              FeatureConfig(max_tokens=int(tokens), sort_window=8))
            except MicrowError as err:
                st.error(str(err))
                return
            ui.start("features", {"sae": sae_name, "dataset": spec.to_dict(), "max_tokens": int(tokens)}, task)
            st.rerun()


if not has_cards:
    st.info("This SAE has no feature cards yet. A feature pass reads a dataset once through the model and the SAE "
            "and keeps, for every feature, its top contexts, histogram and logit effects.")
    compute_form(expanded=True)
    ui.job_panel("features")
    st.stop()

table = ui.call(load_feature_table, store, sae_name)
if table is None:
    compute_form(expanded=True)
    st.stop()
dictionary = ui.call(ConceptDictionary.load, store, sae_name)
concepts = {c.feature: c for c in dictionary.entries} if dictionary else {}
names = {f: c.name for f, c in concepts.items()}
table = table.assign(concept=[names.get(int(f), "") for f in table["feature"]])

st.subheader("All features")
cols = st.columns([2, 1, 1])
query = cols[0].text_input("Search labels and concept names", key="feat_search")
alive_only = cols[1].checkbox("Only features that fired", value=True, key="feat_alive")
named_only = cols[2].checkbox("Only named features", value=False, key="feat_named")
shown = table
if alive_only:
    shown = shown[shown["count"] > 0]
if named_only:
    shown = shown[shown["concept"] != ""]
if query:
    hit = shown["label"].str.contains(query, case=False, regex=False) | shown["concept"].str.contains(
        query, case=False, regex=False)
    shown = shown[hit]
shown = shown.sort_values("max_activation", ascending=False)
pass_tokens = store.read_json(f"saes/{sae_name}/features/meta.json")["tokens"]
st.caption(f"{len(shown):,} of {len(table):,} features; {int((table['count'] > 0).sum()):,} fired on "
           f"{pass_tokens:,} tokens. Click a row to open its card; click a column header to sort.")
selection = st.dataframe(
    shown[["feature", "concept", "label", "density", "max_activation", "mean_activation", "count"]],
    hide_index=True, width="stretch", height=280, on_select="rerun", selection_mode="single-row", key="feat_table",
    column_config={"density": st.column_config.NumberColumn(format="%.5f"),
                   "max_activation": st.column_config.NumberColumn("max activation", format="%.3f"),
                   "mean_activation": st.column_config.NumberColumn("mean activation", format="%.3f")},
)
ui.density_histogram(table["density"], key=f"density-{sae_name}")
rows = selection.selection.rows if selection else []
if rows and rows != st.session_state.get("feat_rows") and rows[0] < len(shown):
    st.session_state["feat_id"] = int(shown.iloc[rows[0]]["feature"])  # a new click; the id box stays editable
st.session_state["feat_rows"] = rows
if st.session_state.get("feat_id", len(table)) >= len(table):  # none yet, or one of a wider SAE
    st.session_state["feat_id"] = int(shown.iloc[0]["feature"]) if len(shown) else 0

st.subheader("Feature card")
feature = int(st.number_input("Feature id", 0, len(table) - 1, key="feat_id"))
card = ui.call(feature_card, store, sae_name, feature)
if card is None:
    st.stop()
name = names.get(feature, "")
st.markdown(f"### Feature {feature}" + (f" — {name}" if name else ""))
st.caption(f"Suggested label: **{card['label'] or '(none)'}**")
cols = st.columns(4)
cols[0].metric("Density", f"{card['density']:.4%}")
cols[1].metric("Max activation", f"{card['max_activation']:.3f}")
cols[2].metric("Mean activation", f"{card['mean_activation']:.3f}")
cols[3].metric("Times fired", f"{card['count']:,}")

if flash := st.session_state.pop("feat_flash", None):
    st.success(flash)
with st.form(f"name_feature_{feature}"):  # keyed by feature: the fields show that feature's saved name
    concept = concepts.get(feature)
    cols = st.columns([1, 2])
    new_name = cols[0].text_input("Concept name", value=name, key=f"feat_name_{feature}",
                                  placeholder=card["label"] or "e.g. ocean")
    description = cols[1].text_input("Description", value=concept.description if concept else "",
                                      key=f"feat_desc_{feature}")
    if st.form_submit_button("Save name", key="feat_save"):
        if not new_name.strip():
            st.error("Type a name for this feature (or remove it on the Concepts page).")
        elif dictionary is not None:
            with ui.errors_shown():
                dictionary.set(feature, name=new_name.strip(), description=description.strip())
                st.session_state["feat_flash"] = f"Saved: feature {feature} is '{new_name.strip()}'."
                st.rerun()

left, right = st.columns(2)
with left:
    if card["count"]:
        ui.histogram(card["histogram"]["edges"], card["histogram"]["counts"], "Activation histogram (when active)",
                     key=f"hist-{feature}", log_y=True)
    else:
        st.caption("This feature never fired in the feature pass.")
with right:
    ui.logit_bars(card["logits_pos"], card["logits_neg"], key=f"logits-{feature}")

st.markdown("**Top activating contexts** (hover a token for its activation)")
for context in card["top_contexts"]:
    ui.show_tokens(context["tokens"], context["activations"], card["max_activation"], bold=context["highlight"])
if not card["top_contexts"]:
    st.caption("No contexts: the feature did not fire.")
with st.expander("Samples across activation levels"):
    for group in card["quantile_samples"]:
        if group["samples"]:
            st.caption(f"activation {group['low']:.2f} – {group['high']:.2f}")
            for context in group["samples"]:
                ui.show_tokens(context["tokens"], context["activations"], card["max_activation"],
                               bold=context["highlight"])
with st.expander("Nearest features (decoder cosine)"):
    labels = table.set_index("feature")["label"]
    st.dataframe(pd.DataFrame([{"feature": int(f), "cosine": round(c, 3), "concept": names.get(int(f), ""),
                                "label": labels.get(int(f), "")} for f, c in card["neighbours"]]),
                 hide_index=True, width="stretch")

st.subheader("What fires on my text")
text = st.text_area("Text", value="The waves rolled onto the sandy beach.", key="feat_text")
if st.button("Show features", key="feat_fires"):
    lm = ui.model(cfg.get("model"))
    if lm is not None:
        sae = ui.sae(sae_name, lm)
        rows = ui.call(what_fires, lm, sae, text, top_k=5)
        encoded = ui.call(encode_text, lm, sae, text)
        if rows is not None and encoded is not None:
            st.session_state["feat_fired"] = (text, feature, rows, encoded[2][:, feature].tolist())
fired = st.session_state.get("feat_fired")
if fired:
    _, fired_feature, rows, values = fired
    named = f" ({names[fired_feature]})" if fired_feature in names else ""
    st.markdown(f"Activation of feature {fired_feature}{named}:")
    ui.show_tokens([r["token"] for r in rows], values, card["max_activation"] if fired_feature == feature else None)
    st.dataframe(pd.DataFrame([{
        "token": repr(r["token"]),
        "top features": ", ".join(f"{f}{' ' + names[f] if f in names else ''} ({v:.2f})" for f, v in r["features"]),
    } for r in rows]), hide_index=True, width="stretch")

ui.job_panel("features")
