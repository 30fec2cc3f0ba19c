"""Streamlit helpers shared by app.py and pages/: store picker, model cache, job panel, plots, token HTML.

Pages only lay out widgets; every computation goes through microw_core, as in the CLI.
"""

from __future__ import annotations

import html
import os
from contextlib import contextmanager
from typing import Callable, Iterator

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from . import jobs
from .errors import MicrowError
from .model import LanguageModel, load_model
from .store import DEFAULT_ROOT, Store

STORE_KEY = "microw_store_root"
MODEL_KEY = "microw_model"
DEVICE_KEY = "microw_device"
SAE_KEY = "microw_sae"
HIGHLIGHT_RGB = "255, 127, 14"  # plotly's orange: readable behind black text at any alpha


# ----- store and models ------------------------------------------------------------------------


def default_store_root() -> str:
    return os.environ.get("MICROW_STORE") or DEFAULT_ROOT


def store() -> Store:
    """The store chosen in the sidebar (session), else $MICROW_STORE or ./microw_store."""
    return Store(st.session_state.get(STORE_KEY) or default_store_root())


def sidebar() -> Store:
    """The sidebar shown on every page: store folder and the model in use."""
    with st.sidebar:
        root = st.text_input("Store folder", value=st.session_state.get(STORE_KEY) or default_store_root(),
                             help="Runs, SAEs, concept dictionaries and jobs live in this folder.", key="store_root")
        st.session_state[STORE_KEY] = root.strip() or default_store_root()
        current = store()
        st.caption(f"`{current.root}`")
        _restore_model()
        if st.session_state.get(MODEL_KEY):
            st.caption(f"Model: **{st.session_state[MODEL_KEY]}**")
        _running_jobs(bool(_active(current)))
    return current


def _active(current: Store) -> list[dict]:
    return [j for j in jobs.list_jobs(current) if j["status"] in jobs.ACTIVE]


def _running_jobs(any_active: bool) -> None:
    """Every running job of the store, on every page (refreshed while there are some)."""
    @st.fragment(run_every=2 if any_active else None)
    def panel() -> None:
        for record in _active(store()):
            st.progress(float(record.get("progress") or 0.0),
                        text=f"{record['kind']}: {round(100 * (record.get('progress') or 0))}%")
    panel()


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def cached_model(name: str, device: str = "auto", dtype: str = "auto") -> LanguageModel:
    return load_model(name, device=device, dtype=dtype)


_last_loaded: dict[str, str] = {}  # this server's last model: a browser reload (new session) keeps using it


def model(name: str | None = None) -> LanguageModel | None:
    """The named model (cached), or the one loaded on the Model page; None (and a message) when it fails."""
    _restore_model()
    name = name or st.session_state.get(MODEL_KEY)
    if not name:
        return None
    return call(cached_model, name, st.session_state.get(DEVICE_KEY, "auto"))


@st.cache_resource(show_spinner="Loading the SAE…", max_entries=8)
def _cached_sae(root: str, name: str, weights_sha256: str, device: str):
    from .sae import load_sae

    return load_sae(Store(root), name, device=device)


def sae(name: str, lm: LanguageModel):
    """The SAE `name` of the current store on `lm`'s device, cached until its weights change."""
    current = store()
    config = current.read_json(f"saes/{name}/config.json")
    return _cached_sae(str(current.root), name, (config.get("weights") or {}).get("sha256", ""), str(lm.device))


def sae_picker(key: str = SAE_KEY) -> tuple[str, dict] | None:
    """A select box of the store's SAEs (the choice is shared by the pages); None when there are none."""
    saes = [s for s in store().list_saes() if "error" not in s]
    if not saes:
        st.info("There is no SAE in this store yet: train one on the **Train SAE** page, or run the demo "
                "pipeline on the **Home** page.")
        return None
    names = [s["name"] for s in saes]
    previous = st.session_state.get(key)
    index = names.index(previous) if previous in names else len(names) - 1
    name = st.selectbox("SAE", names, index=index, key=f"{key}_select")
    st.session_state[key] = name
    info = next(s for s in saes if s["name"] == name)
    cfg = info["config"]
    st.caption(f"{cfg.get('arch')} SAE · {cfg.get('width')} features · layer `{cfg.get('layer')}` of "
               f"`{cfg.get('model')}` · trained on run `{cfg.get('run')}`")
    return name, info


def _restore_model() -> None:
    if not st.session_state.get(MODEL_KEY) and _last_loaded:
        set_model(_last_loaded["name"], _last_loaded["device"])


def set_model(name: str, device: str = "auto") -> None:
    st.session_state[MODEL_KEY] = name
    st.session_state[DEVICE_KEY] = device
    _last_loaded.update(name=name, device=device)


def model_busy(lm: LanguageModel) -> bool:
    """True while another user of this model (a capture or feature job) holds its lock."""
    if lm.lock.acquire(blocking=False):
        lm.lock.release()
        return False
    return True


@contextmanager
def errors_shown() -> Iterator[None]:
    """Show a MicrowError as a clear message instead of a traceback; nothing is lost."""
    try:
        yield
    except MicrowError as err:
        st.error(str(err))


def call(fn: Callable, *args, **kwargs):
    """fn(*args, **kwargs), or None after showing its MicrowError."""
    try:
        return fn(*args, **kwargs)
    except MicrowError as err:
        st.error(str(err))
        return None


def store_overview(store: Store) -> dict:
    """What the store holds, as table rows: models used, runs, SAEs with metrics, concept dictionaries."""
    from .concepts import ConceptDictionary

    runs = store.list_runs()
    saes = store.list_saes()
    models = sorted({r["model"] for r in runs if r.get("model")} |
                    {s["config"]["model"] for s in saes if (s.get("config") or {}).get("model")})
    run_rows = [{"run": r["name"], "model": r.get("model"), "layers": ", ".join(r.get("layers", [])),
                 "tokens": r.get("tokens"), "complete": r.get("complete"), "MB": round(r["bytes"] / 1e6, 1),
                 "problem": r.get("error", "")} for r in runs]
    sae_rows, dictionaries = [], []
    for s in saes:
        cfg, metrics = s.get("config") or {}, s.get("metrics") or {}
        sae_rows.append({
            "SAE": s["name"], "arch": cfg.get("arch"), "layer": cfg.get("layer"), "width": cfg.get("width"),
            "k": cfg.get("k"), "explained variance": _round(metrics.get("explained_variance")),
            "L0": _round(metrics.get("l0")), "dead": _round(metrics.get("dead_fraction")),
            "CE loss recovered": _round(metrics.get("ce_loss_recovered")), "problem": s.get("error", ""),
        })
        if "error" not in s and store.exists(f"saes/{s['name']}/concepts.json"):
            entries = ConceptDictionary.load(store, s["name"]).entries
            names = ", ".join(c.name for c in entries[:8]) + (" …" if len(entries) > 8 else "")
            dictionaries.append({"SAE": s["name"], "concepts": len(entries), "names": names})
    return {"models": models, "runs": run_rows, "saes": sae_rows, "dictionaries": dictionaries}


def table(rows: list[dict]) -> pd.DataFrame:
    """Rows as a DataFrame without columns that are empty everywhere (e.g. 'problem' when all is well)."""
    df = pd.DataFrame(rows)
    empty = [c for c in df.columns if df[c].isna().all() or (df[c].astype(str) == "").all()]
    return df.drop(columns=empty)


def _round(value, digits: int = 3):
    return None if value is None else round(float(value), digits)


@st.cache_data(show_spinner=False, max_entries=8)
def _catalogue(_lm: LanguageModel, key: str) -> list:
    return _lm.catalogue()


def layer_tables(lm: LanguageModel) -> tuple[list[dict], list[dict]]:
    """(alias rows, module rows) for the layer catalogue: names, modules, shapes, parameters."""
    from .layers import alias_shapes

    catalogue = _catalogue(lm, f"{lm.name}@{id(lm)}")
    aliases = [{"alias": alias, "module": info["module"], "hooks": "input" if info["pre"] else "output",
                "shape": str(info["shape"]) if info["shape"] else ""}
               for alias, info in alias_shapes(lm.model, catalogue, lm.d_model).items()]
    modules = [{"module": i.name, "type": i.type, "parameters": i.parameters,
                "shape": str(list(i.output_shape)) if i.output_shape else "", "aliases": ", ".join(i.aliases)}
               for i in catalogue]
    return aliases, modules


# ----- background jobs -------------------------------------------------------------------------


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min left"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s left"
    return f"{seconds} s left"


def start(kind: str, params: dict, fn: jobs.JobFn) -> str | None:
    job_id = call(jobs.start_job, store(), kind, params, fn)
    if job_id:
        st.session_state.setdefault("microw_seen_jobs", set()).add(job_id)
    return job_id


def job_panel(kind: str, plot: Callable[[dict], None] | None = None, finished: int = 3) -> None:
    """Running jobs of `kind` (live: progress, ETA, plot, cancel) and the last `finished` ones.

    Refreshes every second while a job runs; when one finishes the whole page reruns so lists
    (runs, SAEs) pick up the result. State comes from jobs/*.json, so it survives reloads.
    """
    active = [j for j in jobs.list_jobs(store(), kind) if j["status"] in jobs.ACTIVE]

    @st.fragment(run_every=1 if active else None)
    def panel() -> None:
        records = jobs.list_jobs(store(), kind)
        running = [j for j in records if j["status"] in jobs.ACTIVE]
        if active and len(running) < len(active):
            st.rerun(scope="app")  # a job just finished: refresh the whole page
        for record in running:
            _running_job(record, plot)
        for record in [j for j in records if j["status"] in jobs.FINISHED][:finished]:
            _finished_job(record, plot)

    panel()


def _running_job(record: dict, plot: Callable[[dict], None] | None) -> None:
    with st.container(border=True):
        top = st.columns([4, 1])
        top[0].markdown(f"**{record['kind'].capitalize()} job `{record['id']}`** — {record['status']}")
        if top[1].button("Cancel", key=f"cancel-{record['id']}", type="secondary"):
            jobs.cancel_job(store(), record["id"])
            st.toast("Cancelling: the job stops after its current step and keeps what it saved.")
        eta = format_eta(record.get("eta_s"))
        text = " · ".join(x for x in (record.get("message", ""), eta) if x)
        st.progress(float(record.get("progress") or 0.0), text=text or None)
        if plot and record.get("metrics_history"):
            plot(record)


def _finished_job(record: dict, plot: Callable[[dict], None] | None) -> None:
    status = record["status"]
    label = f"{record['kind'].capitalize()} job `{record['id']}` — {status}"
    with st.expander(label, expanded=False):
        if status == "failed":
            st.error(record.get("error") or "The job failed.")
        elif status == "cancelled":
            st.warning("Cancelled; what was finished before the cancel is kept.")
        if record.get("message"):
            st.caption(record["message"])
        if record.get("result"):
            st.json(record["result"], expanded=False)
        if plot and record.get("metrics_history"):
            plot(record)
    if status == "failed" and record["id"] in st.session_state.get("microw_seen_jobs", set()):
        st.error(f"{record['kind'].capitalize()} job failed: {record.get('error')}")


# ----- plots -------------------------------------------------------------------------------------


def _figure(title: str, x: str, y: str, height: int = 260) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=height, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def training_curves(history: list[dict], key: str, x: str = "step") -> None:
    """Loss, explained variance and L0 against steps, side by side."""
    df = pd.DataFrame(history)
    if df.empty or x not in df:
        return
    panels = [("loss", "Loss", "loss"), ("explained_variance", "Explained variance", "fraction"),
              ("l0", "L0", "active features")]
    panels = [p for p in panels if p[0] in df]
    for col, (name, title, unit) in zip(st.columns(len(panels) or 1), panels):
        fig = _figure(title, x, unit)
        fig.add_scatter(x=df[x], y=df[name], mode="lines", name=title)
        col.plotly_chart(fig, width="stretch", key=f"{key}-{name}")


def ev_vs_l0(saes: list[dict], key: str = "ev-l0") -> None:
    """Explained variance against L0, one point per SAE: the sparsity / fidelity trade-off."""
    rows = [{"name": s["name"], "l0": (s.get("metrics") or {}).get("l0"),
             "explained_variance": (s.get("metrics") or {}).get("explained_variance"),
             "arch": (s.get("config") or {}).get("arch", "?")} for s in saes]
    rows = [r for r in rows if r["l0"] is not None and r["explained_variance"] is not None]
    if not rows:
        st.caption("No SAE has metrics yet: train one to see explained variance against L0.")
        return
    df = pd.DataFrame(rows)
    fig = _figure("Explained variance against L0 (each point an SAE)", "L0 (active features per token)",
                  "explained variance", height=320)
    for arch, group in df.groupby("arch"):
        fig.add_scatter(x=group["l0"], y=group["explained_variance"], mode="markers+text", text=group["name"],
                        textposition="top center", name=arch, marker=dict(size=10))
    st.plotly_chart(fig, width="stretch", key=key)


def histogram(edges: list[float], counts: list[float], title: str, key: str, log_y: bool = False) -> None:
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    fig = _figure(title, "activation", "count", height=260)
    fig.add_bar(x=centers, y=counts, marker_color=f"rgb({HIGHLIGHT_RGB})")
    if log_y:
        fig.update_yaxes(type="log", dtick=1)  # labels at powers of ten only
    st.plotly_chart(fig, width="stretch", key=key)


def density_histogram(densities, key: str) -> None:
    """How often features fire, on a log scale: dense features on the right, rare on the left."""
    import numpy as np

    values = np.asarray(densities, dtype=float)
    fired = values[values > 0]
    fig = _figure(f"Feature density (log10 of the fraction of tokens; {int((values == 0).sum())} never fired)",
                  "log10 density", "features", height=240)
    fig.add_histogram(x=np.log10(fired), nbinsx=50, marker_color=f"rgb({HIGHLIGHT_RGB})")
    st.plotly_chart(fig, width="stretch", key=key)


def logit_bars(positive: list, negative: list, key: str) -> None:
    """Tokens this feature pushes up (right) and down (left)."""
    rows = [(str(t), float(v)) for t, v in negative][::-1] + [(str(t), float(v)) for t, v in positive]
    if not rows:
        return
    fig = _figure("Logit effect: tokens promoted (orange) and suppressed (blue)", "logit change", "",
                  height=80 + 18 * len(rows))
    fig.add_bar(x=[v for _, v in rows], y=[repr(t)[1:-1] for t, _ in rows], orientation="h",
                marker_color=["#1f77b4" if v < 0 else f"rgb({HIGHLIGHT_RGB})" for _, v in rows])
    fig.update_yaxes(type="category", dtick=1, tickfont=dict(size=11))
    st.plotly_chart(fig, width="stretch", key=key)


# ----- tokens with highlight ---------------------------------------------------------------------


def tokens_html(tokens: list[str], values: list[float], scale: float | None = None, bold: int | None = None) -> str:
    """Tokens as spans whose background alpha is value / scale; the value shows on hover.

    Everything is escaped: texts come from datasets and users.
    """
    scale = scale if scale and scale > 0 else max([v for v in values if v is not None] + [1e-9])
    spans = []
    for i, (token, value) in enumerate(zip(tokens, values)):
        value = float(value or 0.0)
        alpha = min(max(value / scale, 0.0), 1.0)
        shown = html.escape(token.replace("\n", "↵"))
        weight = "font-weight:700;" if i == bold else ""
        spans.append(f'<span class="mw-tok" title="{html.escape(f"{token!r}: {value:.3f}", quote=True)}" '
                     f'style="background:rgba({HIGHLIGHT_RGB},{alpha:.2f});{weight}">{shown}</span>')
    return ('<div class="mw-tokens" style="font-family:monospace;white-space:pre-wrap;line-height:1.9;'
            'padding:2px 0">' + "".join(spans) + "</div>")


def show_continuation(prompt: str, text: str) -> None:
    """The prompt in bold, then the continuation; both escaped."""
    st.markdown(f'<div class="mw-gen" style="white-space:pre-wrap"><b>{html.escape(prompt)}</b>'
                f'{html.escape(text)}</div>', unsafe_allow_html=True)


def show_tokens(tokens: list[str], values: list[float], scale: float | None = None, bold: int | None = None) -> None:
    st.markdown(tokens_html(tokens, values, scale, bold), unsafe_allow_html=True)
