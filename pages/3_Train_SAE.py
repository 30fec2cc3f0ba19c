"""Train SAE: train a sparse autoencoder on a captured run (a background job with live curves)."""

import json

import streamlit as st

from microw_core import pipeline, ui
from microw_core.errors import MicrowError
from microw_core.sae import ARCHITECTURES, TrainConfig
from microw_core.sae.pipeline import default_name

st.title("Train SAE")
store = ui.store()
runs = sorted((r for r in (ui.call(store.list_runs) or []) if r.get("complete") and "error" not in r),
              key=lambda r: r.get("created", ""))  # newest last, and selected


def live_curves(record: dict) -> None:
    ui.training_curves(record["metrics_history"], key=f"job-{record['id']}")


if not runs:
    st.info("There is no complete activation run in this store: capture one on the **Activations** page.")
    st.page_link("pages/2_Activations.py", label="Go to the Activations page", icon=":material/database:")
else:
    cols = st.columns(2)
    run_name = cols[0].selectbox("Activation run", [r["name"] for r in runs], index=len(runs) - 1, key="train_run")
    run = next(r for r in runs if r["name"] == run_name)
    layer = cols[1].selectbox("Layer", run["layers"], key="train_layer")
    d_in = run["d_model"][layer]
    st.caption(f"{run['tokens']:,} tokens of `{run['model']}`, {d_in} dimensions; 10% (at least 2,048 tokens) are "
               "held out to measure the SAE.")
    cols = st.columns(4)
    arch = cols[0].selectbox("Architecture", list(ARCHITECTURES), index=list(ARCHITECTURES).index("topk"),
                             key="train_arch", help="topk / batchtopk: fixed number of active features per token; "
                                                    "relu: L1 penalty; jumprelu: learned thresholds with an L0 penalty")
    expansion = cols[1].selectbox("Features (× d_in)", [2, 4, 8, 16, 32], index=2, key="train_expansion")
    width = expansion * d_in
    sparsity = {}
    if arch in ("topk", "batchtopk"):
        sparsity["k"] = int(cols[2].number_input("k (active features per token)", 1, width, min(32, width),
                                                 key="train_k"))
    elif arch == "relu":
        sparsity["l1_coeff"] = cols[2].number_input("L1 coefficient", 0.01, 100.0, 5.0, key="train_l1")
    else:
        sparsity["l0_coeff"] = cols[2].number_input("L0 coefficient", 1e-5, 1.0, 1e-3, format="%.5f", key="train_l0")
    tokens = int(cols[3].number_input("Training tokens", 4_096, 1_000_000_000, max(2 * run["tokens"], 100_000),
                                      step=100_000, key="train_tokens",
                                      help="More than the run holds means several passes over it."))
    cols = st.columns(4)
    batch_size = int(cols[0].selectbox("Batch size", [256, 512, 1024, 2048, 4096], index=3, key="train_batch"))
    lr = cols[1].number_input("Learning rate (0 = automatic)", 0.0, 1.0, 0.0, format="%.5f", key="train_lr")
    evaluate = cols[2].checkbox("Measure CE loss with the model", value=True, key="train_ce",
                                help="Splices the SAE into the model on held-out texts: loss recovered and KL.")
    try:
        # about 50 points on the live curves, however long the run
        config = TrainConfig(arch=arch, width=width, tokens=tokens, batch_size=batch_size, lr=lr or None,
                             log_every=max(1, -(-tokens // batch_size) // 50), **sparsity)
        suggested = default_name(config, run_name, layer, d_in)
    except MicrowError as err:
        st.error(str(err))
        config, suggested = None, ""
    name = cols[3].text_input("SAE name", value=suggested, key=f"train_name_{suggested}")
    if st.button("Start training", type="primary", key="train_start", disabled=config is None):
        lm = ui.model(run["model"]) if evaluate else None
        if not evaluate or lm is not None:
            params = {"run": run_name, "layer": layer, "name": name, **{k: v for k, v in config.__dict__.items()}}
            ui.start("train", params, pipeline.train_task(store, run_name, layer, config, name=name or None, lm=lm))
            st.rerun()

ui.job_panel("train", plot=live_curves)

st.subheader("SAEs in the store")
saes = ui.call(store.list_saes) or []
if not saes:
    st.caption("No SAEs yet.")
    st.stop()
overview = ui.store_overview(store)
st.dataframe(ui.table(overview["saes"]), hide_index=True, width="stretch")
ui.ev_vs_l0(saes)
names = [s["name"] for s in saes]
shown = st.selectbox("Training curves of", names, index=len(names) - 1, key="train_curves")
if store.exists(f"saes/{shown}/training.json"):
    training = ui.call(store.read_json, f"saes/{shown}/training.json")
    if training:
        ui.training_curves(training.get("history", []), key=f"sae-{shown}")
metrics = next(s for s in saes if s["name"] == shown).get("metrics")
if metrics:
    with st.expander("All metrics (held-out tokens)"):
        st.code(json.dumps(metrics, indent=2), language="json")
with st.expander("Delete an SAE"):
    sure = st.checkbox("Yes, delete its weights, feature cards and concept dictionary", key="train_delete_sure")
    if st.button(f"Delete SAE '{shown}'", key="train_delete", disabled=not sure):
        with ui.errors_shown():
            store.delete_sae(shown)
            st.rerun()
