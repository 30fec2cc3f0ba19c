"""Concepts: the SAE's dictionary of named features: edit, search, export and import."""

import pandas as pd
import streamlit as st

from microw_core import ui
from microw_core.concepts import ConceptDictionary
from microw_core.errors import InvalidInputError, MicrowError
from microw_core.features import load_feature_table

COLUMNS = ["feature", "name", "description", "tags", "confidence"]

st.title("Concepts")
store = ui.store()
picked = ui.sae_picker()
if picked is None:
    st.stop()
sae_name, info = picked
dictionary = ui.call(ConceptDictionary.load, store, sae_name)
if dictionary is None:
    st.stop()
width = info["config"].get("width")
if flash := st.session_state.pop("concepts_flash", None):
    st.success(flash)

query = st.text_input("Search names, tags and descriptions", key="concepts_search")
entries = dictionary.search(query)
original = pd.DataFrame([{"feature": c.feature, "name": c.name, "description": c.description,
                          "tags": "; ".join(c.tags), "confidence": c.confidence} for c in entries], columns=COLUMNS)
labels = ui.call(load_feature_table, store, sae_name) if store.exists(f"saes/{sae_name}/features/meta.json") else None
shown = original.copy()
if labels is not None:
    shown["suggested label"] = shown["feature"].map(labels.set_index("feature")["label"]).fillna("")

st.caption(f"{len(dictionary)} named features in the dictionary of `{sae_name}`"
           + (f"; {len(entries)} match '{query}'." if query else ".")
           + " Edit cells, add rows at the bottom, delete rows with the row menu, then save.")
edited = st.data_editor(
    shown, num_rows="dynamic", hide_index=True, width="stretch", key=f"concepts_editor_{sae_name}_{query}",
    disabled=["suggested label"],
    column_config={
        "feature": st.column_config.NumberColumn("feature", min_value=0, max_value=(width or 1) - 1, step=1,
                                                 required=True),
        "name": st.column_config.TextColumn("name", required=True),
        "tags": st.column_config.TextColumn("tags", help="separated by ';'"),
        "confidence": st.column_config.NumberColumn("confidence", min_value=0.0, max_value=1.0, step=0.05,
                                                    default=1.0),
    },
)


def text(value) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value).strip()


def fields(row: dict) -> dict:
    tags = [t.strip() for t in text(row.get("tags")).replace(",", ";").split(";") if t.strip()]
    confidence = row.get("confidence")
    return {"name": text(row.get("name")), "description": text(row.get("description")), "tags": tags,
            "confidence": 1.0 if confidence is None or pd.isna(confidence) else float(confidence)}


def save(before: pd.DataFrame, after: pd.DataFrame) -> str:
    """Apply the edits (merge-on-write): only added, changed and removed features are written."""
    after = after.dropna(how="all")
    if after["feature"].isna().any() or after["name"].map(text).eq("").any():
        raise InvalidInputError("Every row needs a feature id and a name; fill them in or delete the row.")
    features = after["feature"].astype(int)
    duplicated = sorted(set(features[features.duplicated()]))
    if duplicated:
        raise InvalidInputError(f"Feature {duplicated[0]} appears twice; keep one row per feature.")
    old = {int(r["feature"]): fields(r) for r in before.to_dict("records")}
    written = 0
    for row in after.to_dict("records"):
        new = fields(row)
        if old.get(int(row["feature"])) != new:
            dictionary.set(int(row["feature"]), **new)
            written += 1
    removed = set(old) - set(features)
    for feature in removed:
        dictionary.remove(feature)
    return f"Saved: {written} concept(s) written, {len(removed)} removed."


if st.button("Save changes", type="primary", key="concepts_save"):
    try:
        message = save(original, edited[COLUMNS])
    except MicrowError as err:
        st.error(str(err))
    else:
        st.session_state["concepts_flash"] = message
        st.rerun()

st.subheader("Which features fire on a token?")
token = st.text_input("Token", placeholder="e.g. beach", key="concepts_token",
                      help="Features whose top activations peak on this token, from the feature cards.")
if token.strip():
    matches = ui.call(dictionary.search_token, token)
    if matches:
        st.dataframe(pd.DataFrame([{"feature": m.feature, "score": round(m.score, 2), "suggested label": m.label,
                                    "concept": m.concept.name if m.concept else ""} for m in matches]),
                     hide_index=True, width="stretch")
    elif matches is not None:
        st.caption(f"No feature peaks on '{token.strip()}' in its top contexts.")

st.subheader("Export and import")
cols = st.columns(2)
with cols[0]:
    st.download_button("Download JSON", dictionary.to_json(), file_name=f"{sae_name}-concepts.json",
                       mime="application/json", key="concepts_json")
    st.download_button("Download CSV", dictionary.to_csv(), file_name=f"{sae_name}-concepts.csv", mime="text/csv",
                       key="concepts_csv")
with cols[1]:
    upload = st.file_uploader("Import concepts (JSON or CSV)", type=["json", "csv"], key="concepts_upload",
                              help="Imported entries replace the entries of the same features; others are kept.")
    if upload is not None and st.button("Import", key="concepts_import"):
        text = upload.getvalue().decode("utf-8", errors="replace")
        reader = dictionary.from_csv if upload.name.lower().endswith(".csv") else dictionary.from_json
        with ui.errors_shown():
            count = reader(text)
            st.session_state["concepts_flash"] = f"Imported {count} concept(s) from {upload.name}."
            st.rerun()
