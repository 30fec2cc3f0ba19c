"""microw app: `streamlit run app.py` (or `microw app`). Home page and navigation.

Every page only lays out widgets; the work is done by microw_core, the same code the CLI runs.
"""

import streamlit as st

from microw_core import pipeline, ui

st.set_page_config(page_title="microw", page_icon=":material/biotech:", layout="wide")


def home() -> None:
    store = ui.store()
    st.title("microw")
    st.markdown(
        "**microw** finds the concepts a language model uses with sparse autoencoders (SAEs), lets you name them, "
        "and steers what the model writes by turning those concepts up or down.  \n"
        "Workflow: load a **Model** → capture **Activations** → **Train an SAE** → inspect and name **Features** "
        "→ keep a **Concepts** dictionary → **Steer** generation."
    )

    st.subheader("Try it: the demo pipeline")
    budget = pipeline.DemoBudget()
    st.caption(
        f"Captures {budget.capture_tokens:,} tokens of layer `{budget.layer}` of the demo model on the demo corpus, "
        f"trains a top-k SAE ({budget.width} features, k={budget.k}) and computes feature cards over "
        f"{budget.feature_tokens:,} tokens. About 2 minutes on two CPU cores."
    )
    running = [j for j in ui.jobs.list_jobs(store, "pipeline") if j["status"] in ui.jobs.ACTIVE]
    if st.button("Run the demo pipeline", type="primary", disabled=bool(running)):
        ui.start("pipeline", {"budget": budget.__dict__},
                 lambda report, should_stop: pipeline.run_demo_pipeline(store, report, should_stop, budget=budget))
        st.rerun()
    ui.job_panel("pipeline", plot=lambda record: ui.training_curves(
        [m for m in record["metrics_history"] if "loss" in m], key=f"job-{record['id']}"), finished=1)
    last = next(iter(ui.jobs.list_jobs(store, "pipeline")), None)
    if last and last["status"] == "done" and (last.get("result") or {}).get("sae"):
        sae = last["result"]["sae"]
        st.session_state.setdefault(ui.SAE_KEY, sae)
        st.success(f"The demo SAE `{sae}` is ready: explore its features, name some, then steer them.")
        st.page_link("pages/4_Features.py", label="Open the Features page", icon=":material/category_search:")

    st.subheader("Store")
    overview = ui.call(ui.store_overview, store)
    if overview is None:
        return
    cols = st.columns(4)
    cols[0].metric("Models used", len(overview["models"]))
    cols[1].metric("Activation runs", len(overview["runs"]))
    cols[2].metric("SAEs", len(overview["saes"]))
    cols[3].metric("Named concepts", sum(d["concepts"] for d in overview["dictionaries"]))
    if overview["models"]:
        st.markdown("**Models:** " + ", ".join(f"`{m}`" for m in overview["models"]))
    if not overview["runs"] and not overview["saes"]:
        st.info(f"The store `{store.root}` is empty. Run the demo pipeline above, or start on the **Model** page.")
        return
    st.markdown("**Activation runs**")
    st.dataframe(ui.table(overview["runs"]), hide_index=True, width="stretch")
    st.markdown("**SAEs**")
    if overview["saes"]:
        st.dataframe(ui.table(overview["saes"]), hide_index=True, width="stretch")
    else:
        st.caption("None yet: train one on the **Train SAE** page.")
    left, right = st.columns(2)
    with left:
        st.markdown("**Concept dictionaries**")
        if overview["dictionaries"]:
            st.dataframe(ui.table(overview["dictionaries"]), hide_index=True, width="stretch")
        else:
            st.caption("None yet: name features on the **Features** page.")
    with right:
        ui.ev_vs_l0(store.list_saes())


pages = [
    st.Page(home, title="Home", icon=":material/home:", default=True),
    st.Page("pages/1_Model.py", title="Model", icon=":material/neurology:", url_path="model"),
    st.Page("pages/2_Activations.py", title="Activations", icon=":material/database:", url_path="activations"),
    st.Page("pages/3_Train_SAE.py", title="Train SAE", icon=":material/model_training:", url_path="train"),
    st.Page("pages/4_Features.py", title="Features", icon=":material/category_search:", url_path="features"),
    st.Page("pages/5_Concepts.py", title="Concepts", icon=":material/dictionary:", url_path="concepts"),
    st.Page("pages/6_Steering.py", title="Steering", icon=":material/tune:", url_path="steering"),
]
navigation = st.navigation(pages)
ui.sidebar()
navigation.run()
