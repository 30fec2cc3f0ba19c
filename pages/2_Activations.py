"""Activations: capture layers of the model over a dataset into the store (a background job)."""

import streamlit as st

from microw_core import pipeline, ui
from microw_core.capture import CaptureConfig
from microw_core.datasets import FILE_SUFFIXES, DatasetSpec
from microw_core.errors import InvalidInputError, MicrowError
from microw_core.layers import layer_aliases
from microw_core.store import safe_name

st.title("Activations")
store = ui.store()
lm = ui.model()
if lm is None:
    st.info("Load a model on the **Model** page first.")
    st.page_link("pages/1_Model.py", label="Go to the Model page", icon=":material/neurology:")
    st.stop()
st.caption(f"Model: **{lm.name}**. Activations are stored under `{store.root / 'runs'}`.")

SOURCES = ["Demo corpus", "Upload a file", "Local path", "Hugging Face dataset"]
source = st.radio("Dataset", SOURCES, horizontal=True, key="cap_source")
text_column, split, config, dataset = "text", None, None, None
if source == "Demo corpus":
    dataset = "demo"
elif source == "Upload a file":
    upload = st.file_uploader("Texts file", type=[s.lstrip(".") for s in FILE_SUFFIXES],
                              help="Saved into the store's uploads/ folder, so the run can be reproduced.",
                              key="cap_upload")
    if upload is not None:
        relpath = f"uploads/{safe_name(upload.name)}"
        if st.session_state.get("microw_upload") != (relpath, upload.size):
            ui.call(store.write_bytes, relpath, upload.getvalue())
            st.session_state["microw_upload"] = (relpath, upload.size)
        dataset = str(store.root / relpath)
        st.caption(f"Saved as `{dataset}`")
elif source == "Local path":
    dataset = st.text_input("File or folder", placeholder="/data/reviews.jsonl",
                            help=f"{', '.join(FILE_SUFFIXES)} or a folder saved with datasets.save_to_disk",
                            key="cap_path").strip() or None
else:
    name = st.text_input("Dataset name", placeholder="roneneldan/TinyStories", key="cap_hub").strip()
    dataset = f"hub:{name}" if name else None
    cols = st.columns(2)
    split = cols[0].text_input("Split", value="train") or None
    config = cols[1].text_input("Config (subset)", value="") or None
if source != "Demo corpus":
    text_column = st.text_input("Text column", value="text", help="The column or JSON key that holds the text.",
                                key="cap_column")

aliases = list(layer_aliases(lm.model))
middle = f"resid_post.{lm.n_layers // 2}"
layers = st.multiselect("Layers", aliases, default=[middle] if middle in aliases else aliases[:1],
                        help="Several layers are captured in one pass over the data.", key="cap_layers")
cols = st.columns(4)
max_tokens = cols[0].number_input("Token budget", 1_000, 100_000_000, 100_000, step=10_000, key="cap_tokens")
batch_size = cols[1].number_input("Batch size", 1, 1024, 32)
max_length = cols[2].number_input("Tokens per text (max)", 8, 8192, 256)
dtype = cols[3].selectbox("Storage dtype", ["float32", "float16", "bfloat16"],
                          help="float16 halves the disk space; SAEs train in float32 either way.")
run_name = st.text_input("Run name", value="", placeholder="left empty: run-<date>-<time>",
                         help="An interrupted run of this name is resumed with the same settings.", key="cap_run")

if st.button("Start capture", type="primary", key="cap_start"):
    try:
        if dataset is None or not layers:
            raise InvalidInputError("Choose a dataset (a file, a path or a dataset name) and at least one layer.")
        spec = DatasetSpec.parse(dataset, text_column=text_column, split=split, config=config)
        # sort_window=8: texts are length-sorted 256 at a time, so a small budget does not read (or, for
        # the demo corpus, generate) thousands of texts it will not use.
        cfg = CaptureConfig(layers=layers, max_tokens=int(max_tokens), batch_size=int(batch_size),
                            max_length=int(max_length), dtype=dtype, sort_window=8)
    except MicrowError as err:
        st.error(str(err))
    else:
        run = safe_name(run_name) if run_name.strip() else pipeline.default_run_name("run")
        ui.start("capture", {"model": lm.name, "dataset": spec.to_dict(), "run": run, "layers": layers,
                             "max_tokens": int(max_tokens)},
                 pipeline.capture_task(lm, spec, cfg, store, run))
        st.rerun()

ui.job_panel("capture")

st.subheader("Runs in the store")
runs = ui.call(store.list_runs) or []
if not runs:
    st.caption("No runs yet.")
else:
    rows = [{"run": r["name"], "model": r.get("model"), "dataset": (r.get("dataset") or {}).get("source"),
             "layers": ", ".join(r.get("layers", [])), "tokens": r.get("tokens"), "complete": r.get("complete"),
             "MB": round(r["bytes"] / 1e6, 1), "created": r.get("created"), "problem": r.get("error", "")}
            for r in runs]
    st.dataframe(ui.table(rows), hide_index=True, width="stretch")
    with st.expander("Delete a run"):
        doomed = st.selectbox("Run", [r["name"] for r in runs], key="delete_run")
        sure = st.checkbox("Yes, delete its activations (SAEs trained on it are kept)", key="delete_run_sure")
        if st.button(f"Delete run '{doomed}' and its files", key="delete_run_button", disabled=not sure):
            with ui.errors_shown():
                store.delete_run(doomed)
                st.rerun()
