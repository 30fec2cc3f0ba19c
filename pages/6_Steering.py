"""Steering: turn named concepts up or down while the model writes; baseline and steered side by side."""

import plotly.graph_objects as go
import streamlit as st

from microw_core import ui
from microw_core.concepts import ConceptDictionary
from microw_core.errors import InvalidInputError, MicrowError
from microw_core.steering import METHODS, POSITIONS, UNITS, FeatureEdit, SteeringConfig, steer

st.title("Steering")
store = ui.store()
picked = ui.sae_picker()
if picked is None:
    st.stop()
sae_name, info = picked
cfg = info["config"]
dictionary = ui.call(ConceptDictionary.load, store, sae_name)
if dictionary is None:
    st.stop()
names = {c.feature: c.name for c in dictionary.entries}

options = [f"{name} (#{feature})" for feature, name in names.items()]
if not options:
    st.info("No feature of this SAE has a name yet. Name features on the **Features** page, or steer features by id "
            "below.")
chosen = st.multiselect("Concepts to steer", options, key="steer_concepts",
                        help="Each gets its own strength slider; several concepts are steered at once.")
extra = st.text_input("Other feature ids", key="steer_ids", placeholder="e.g. 12, 40",
                      help="Comma-separated feature ids without a name.")
cols = st.columns(3)
method = cols[0].selectbox("Method", METHODS, index=METHODS.index("clamp"), key="steer_method",
                           help="clamp: hold the feature at a value; add: add the feature's direction; "
                                "ablate: remove the given fraction of the feature (1 = off). On the demo, clamping "
                                "at 0.3-0.7 of the maximum activation steers best before the text degrades.")
unit = cols[1].selectbox("Strength unit", UNITS, key="steer_unit",
                         help="max_activation: multiples of the feature's largest activation seen; median_norm: "
                              "multiples of the layer's typical activation size; raw: as is")
positions = cols[2].radio("Positions", POSITIONS, horizontal=True, key="steer_positions",
                          help="Edit every position, only the prompt, or only the generated tokens")

features: list[int] = [int(option.rsplit("#", 1)[1].rstrip(")")) for option in chosen]
try:
    features += [int(x) for x in extra.replace(";", ",").split(",") if x.strip()]
except ValueError:
    st.error("Feature ids are whole numbers separated by commas, e.g. 12, 40.")
features = list(dict.fromkeys(features))
strengths = {}
if features:
    st.markdown("**Strengths** (0 = off)")
    limits = (0.0, 1.0, 1.0) if method == "ablate" else (-5.0, 5.0, 0.5)
    for feature in features:
        label = f"{names[feature]} (#{feature})" if feature in names else f"feature #{feature}"
        strengths[feature] = st.slider(label, limits[0], limits[1], limits[2],
                                       step=0.05,
                                       key=f"steer_strength_{feature}_{method}")

with st.form("steer_form"):
    prompt = st.text_area("Prompt", value="Once upon a time", height=80, key="steer_prompt")
    cols = st.columns(3)
    max_new_tokens = cols[0].number_input("New tokens", 1, 256, 40, key="steer_tokens")
    temperature = cols[1].number_input("Temperature (0 = greedy)", 0.0, 2.0, 0.0, step=0.1, key="steer_temperature")
    seed = cols[2].number_input("Seed", 0, 2**31 - 1, 0, key="steer_seed")
    submitted = st.form_submit_button("Generate baseline and steered", type="primary", key="steer_go")

if submitted:
    lm = ui.model(cfg.get("model"))
    if lm is not None:
        try:
            if not features:
                raise InvalidInputError("Choose at least one concept (or feature id) to steer.")
            edits = [FeatureEdit(f, float(strength), method=method, unit=unit) for f, strength in strengths.items()]
            config = SteeringConfig(positions=positions, max_new_tokens=int(max_new_tokens),
                                    temperature=float(temperature), seed=int(seed))
            if ui.model_busy(lm):
                st.warning("The model is busy with a running job; the generation waits for it.")
            with st.spinner("Generating…"):
                st.session_state["steer_result"] = steer(lm, ui.sae(sae_name, lm), edits, prompt, config, store=store,
                                                         sae_name=sae_name)
        except MicrowError as err:
            st.error(str(err))

result = st.session_state.get("steer_result")
if result:
    columns = st.columns(3 if result.get("prompt_baseline") is not None else 2)
    with columns[0]:
        st.markdown("**Baseline**")
        ui.show_continuation(result["prompt"], result["baseline"])
    with columns[1]:
        st.markdown("**Steered**")
        ui.show_continuation(result["prompt"], result["steered"])
        st.caption(", ".join(f"#{e['feature']} {e['method']} {e['strength']:g} ({e['unit']})" for e in result["edits"]))
    if result.get("prompt_baseline") is not None:
        with columns[2]:
            st.markdown("**Prompt-only baseline**")
            ui.show_continuation(result["prompt_baseline_prompt"], result["prompt_baseline"])
            st.caption("The concept written into the prompt instead of steering.")

    st.markdown("**Activation trace** — the steered features while generating")
    fig = go.Figure()
    for feature, values in result["activations"].items():
        label = names.get(int(feature), f"#{feature}")
        fig.add_scatter(y=values, mode="lines+markers", name=f"{label} (steered)")
        fig.add_scatter(y=result["baseline_activations"].get(feature, []), mode="lines", name=f"{label} (baseline)",
                        line=dict(dash="dot"))
    tokens = result["tokens"]["steered"]
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=10, b=10), yaxis_title="feature activation",
                      xaxis=dict(title="generated token (steered run)", tickmode="array",
                                 tickvals=list(range(len(tokens))), ticktext=[repr(t)[1:-1] for t in tokens]))
    st.plotly_chart(fig, width="stretch")
