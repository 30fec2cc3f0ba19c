"""Model: load the demo model, a local folder or a hub id; see its layers; try a generation."""

import pandas as pd
import streamlit as st

from microw_core import ui
from microw_core.model import generate

st.title("Model")

SOURCES = {"Demo model": "demo", "Local folder": "folder", "Hugging Face hub id": "hub"}
current = st.session_state.get(ui.MODEL_KEY)
with st.form("load"):
    source = st.radio("Source", list(SOURCES), horizontal=True, index=0 if current in (None, "demo") else 1,
                      key="model_source")
    name = st.text_input("Folder or hub id", value="" if current in (None, "demo") else current,
                         placeholder="/path/to/model or e.g. EleutherAI/pythia-70m",
                         help="Ignored for the demo model. A hub id is downloaded once into the Hugging Face cache.",
                         key="model_name")
    device = st.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="model_device")
    if st.form_submit_button("Load model", type="primary", key="model_load"):
        name = "demo" if SOURCES[source] == "demo" else name.strip()
        if not name:
            st.error("Enter a folder path or a hub id, or choose the demo model.")
        elif ui.call(ui.cached_model, name, device) is not None:
            ui.set_model(name, device)

lm = ui.model()
if lm is None:
    st.info("Load a model to see its layers and try a generation. The demo model is a small story model "
            "that ships with microw.")
    st.stop()

parameters = sum(p.numel() for p in lm.model.parameters())
cols = st.columns(5)
cols[0].metric("Model", lm.name)
cols[1].metric("Layers", lm.n_layers)
cols[2].metric("Width (d_model)", lm.d_model)
cols[3].metric("Vocabulary", f"{lm.vocab_size:,}")
cols[4].metric("Parameters", f"{parameters / 1e6:.1f} M" if parameters >= 1e6 else f"{parameters:,}")
st.caption(f"{type(lm.model).__name__} on {lm.device}, {str(next(lm.model.parameters()).dtype).removeprefix('torch.')}")

st.subheader("Layers")
st.caption("Use these names on the Activations page: `resid_post.i` is the residual stream after block i, "
           "`resid_pre.i` before it, `attn_out.i` / `mlp_out.i` the block's attention and MLP outputs.")
aliases, modules = ui.layer_tables(lm)
st.dataframe(pd.DataFrame(aliases), hide_index=True, width="stretch")
with st.expander(f"All {len(modules)} modules"):
    st.dataframe(pd.DataFrame(modules), hide_index=True, width="stretch")

st.subheader("Quick generation")
with st.form("generate"):
    prompt = st.text_area("Prompt", value="Once upon a time", height=80, key="gen_prompt")
    cols = st.columns(3)
    max_new_tokens = cols[0].number_input("New tokens", 1, 512, 40)
    temperature = cols[1].number_input("Temperature (0 = greedy)", 0.0, 2.0, 0.0, step=0.1)
    seed = cols[2].number_input("Seed", 0, 2**31 - 1, 0)
    submitted = st.form_submit_button("Generate", key="gen_button")
if submitted:
    if ui.model_busy(lm):
        st.warning("The model is busy with a running job (capture or feature pass); the generation waits for it.")
    with st.spinner("Generating…"):
        result = ui.call(generate, lm, prompt, max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                         seed=int(seed))
    if result is not None:
        ui.show_continuation(prompt, result.text)
        st.caption(f"{len(result.token_ids)} new tokens")
