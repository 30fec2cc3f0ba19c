"""SAEs in the store: saes/<name>/config.json, sae.safetensors, metrics.json, training.json."""

from __future__ import annotations

from ..errors import StoreCorruptError, StoreError
from ..store import Store, safe_name
from .base import SAE, SAEConfig, build_sae


def save_sae(store: Store, name: str, sae: SAE, metrics: dict | None = None,
             training: dict | None = None) -> str:
    """Write an SAE (weights first, config with their checksum last); returns the stored name."""
    name = safe_name(name)
    weights = store.write_tensors(f"saes/{name}/sae.safetensors",
                                  {k: v.detach().float().cpu() for k, v in sae.state_dict().items()})
    if metrics is not None:
        store.write_json(f"saes/{name}/metrics.json", metrics)
    if training is not None:
        store.write_json(f"saes/{name}/training.json", training)
    store.write_json(f"saes/{name}/config.json", {**sae.cfg.to_dict(), "weights": weights.to_dict()})
    return name


def load_sae(store: Store, name: str, device: str | None = None) -> SAE:
    """The SAE `name` with its saved architecture, width and k; checksum verified."""
    name = safe_name(name)
    if not store.exists(f"saes/{name}/config.json"):
        known = [item["name"] for item in store.list_saes()]
        raise StoreError(f"There is no SAE '{name}' in {store.root}" +
                         (f"; known SAEs: {', '.join(known)}." if known else "; train one with `microw train`."))
    data = store.read_json(f"saes/{name}/config.json")
    record = data.pop("weights", None)
    sae = build_sae(SAEConfig.from_dict(data))
    tensors = store.read_tensors(f"saes/{name}/sae.safetensors", record["sha256"] if record else None)
    try:
        sae.load_state_dict(tensors)
    except RuntimeError as e:
        raise StoreCorruptError(f"The weights of SAE '{name}' do not fit its config.json ({e}). "
                                f"Delete the SAE '{name}' and train or import it again.") from None
    return sae.eval().to(device) if device else sae.eval()


def load_metrics(store: Store, name: str) -> dict | None:
    path = f"saes/{safe_name(name)}/metrics.json"
    return store.read_json(path) if store.exists(path) else None
