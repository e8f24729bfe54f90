"""Export: take the trained weights away, with what is needed to load them."""

import json
from pathlib import Path

import streamlit as st

from engine.bundle import bundle_bytes
from engine.codegen import model_code, usage
from engine.errors import LayerLabError
from engine.export import load_model, onnx_bytes, state_dict_bytes, torchscript_bytes
from engine.runs import runs_dir
from ui.common import page, show_error, trained_run
from ui.serve_views import model_card_panel, quantize_panel, service_panel

page(
    "Export",
    "Take a trained model anywhere: one zip that runs without LayerLab, or each part on its own "
    "(plain PyTorch code, safetensors, state_dict, ONNX, TorchScript, the spec).",
)


@st.cache_data(max_entries=8, show_spinner="Exporting and checking the outputs…")
def exported(path: str, fmt: str, weights_mtime: float) -> bytes:
    """ONNX, TorchScript or the bundle of the run whose final weights are at `path` (cached per weights file)."""
    if fmt == "bundle":
        return bundle_bytes(Path(path).parent)
    model, _ = load_model(path)
    return onnx_bytes(model) if fmt == "onnx" else torchscript_bytes(model)


run = trained_run("Run", "export.run")
run_id = run["id"]
run_dir = runs_dir() / run_id
path = run_dir / "model.safetensors"
weights = path.read_bytes()
try:
    model, metadata = load_model(weights)
except LayerLabError as e:
    show_error(e)
    st.stop()
spec_json = metadata["spec"]
tensors = model.state_dict()
n_params = sum(t.numel() for t in tensors.values())
st.caption(f"{len(tensors)} tensors · {n_params:,} values · {len(weights) / 1024:,.1f} KiB")


def build_then_download(fmt: str, label: str, file_name: str) -> None:
    """A button that builds the export (it is checked, which takes a few seconds), then its download."""
    # Built already, or being built in this rerun (a clicked button's value is set before the script runs).
    built = st.session_state.get(f"export.{fmt}") == run_id or st.session_state.get(f"make.{fmt}")
    if st.button(
        f"Build {label}",
        key=f"make.{fmt}",
        icon=":material/build:",
        type="primary" if fmt == "bundle" and not built else "secondary",
    ):
        st.session_state[f"export.{fmt}"] = run_id
    if st.session_state.get(f"export.{fmt}") == run_id:
        try:
            data = exported(str(path), fmt, path.stat().st_mtime)
        except LayerLabError as e:
            show_error(e)
            return
        st.download_button(
            f"Download {label}",
            data,
            file_name=file_name,
            mime="application/zip" if fmt == "bundle" else "application/octet-stream",
            on_click="ignore",
            icon=":material/download:",
            type="primary",
            key=f"dl.{fmt}",
        )


with st.container(border=True):
    b1, b2 = st.columns([3, 1.3], vertical_alignment="center")
    b1.markdown(
        "**Everything, as one zip**  \n`model.py` (plain PyTorch), the weights as safetensors, state_dict, "
        "ONNX and TorchScript, `predict.py` (new rows or images, with the same preprocessing), `serve.py` (an "
        "HTTP service) with a `Dockerfile` and `requirements.txt`, `train.py` (retrains with this run's settings "
        "and seed), `MODEL_CARD.md`, `preprocessing.json`, `labels.json`, the data and a manifest (versions, "
        "seed, dataset hash, settings, final metrics). It runs without LayerLab."
    )
    with b2:
        build_then_download("bundle", "bundle (.zip)", f"{run_id}.zip")

c1, c2, c3 = st.columns(3, border=True)
with c1:
    st.markdown(
        "**safetensors**  \nFor any PyTorch code: safe to load, the spec and preprocessing travel in "
        "its metadata."
    )
    st.download_button(
        "Download model.safetensors",
        weights,
        file_name=f"{run_id}.safetensors",
        mime="application/octet-stream",
        on_click="ignore",
        icon=":material/download:",
        key="dl.safetensors",
    )
with c2:
    st.markdown(
        "**state_dict (.pt)**  \nFor `model.load_state_dict(torch.load(path, weights_only=True))`."
    )
    st.download_button(
        "Download state_dict.pt",
        state_dict_bytes(tensors),
        file_name=f"{run_id}.pt",
        mime="application/octet-stream",
        on_click="ignore",
        icon=":material/download:",
        key="dl.pt",
    )
with c3:
    code = model_code(model, run["name"])
    st.markdown(
        "**model.py**  \nThe model as a plain PyTorch `nn.Module`, no LayerLab import; loads the "
        "safetensors file as it is."
    )
    st.download_button(
        "Download model.py",
        code,
        file_name="model.py",
        mime="text/x-python",
        on_click="ignore",
        icon=":material/download:",
        key="dl.code",
    )

c4, c5, c6 = st.columns(3, border=True)
with c4:
    st.markdown(
        "**ONNX**  \nFor onnxruntime, TensorRT, OpenVINO or the browser: a dynamic batch dimension, input "
        "`input`, output `output`. Checked against PyTorch at batch 1 and 7."
    )
    build_then_download("onnx", "ONNX", f"{run_id}.onnx")
with c5:
    st.markdown(
        "**TorchScript**  \nFor `torch.jit.load` in Python or C++ (libtorch), without the model's code. "
        "Checked against PyTorch at batch 1 and 7."
    )
    build_then_download("torchscript", "TorchScript", f"{run_id}.torchscript.pt")
with c6:
    st.markdown(
        "**Model spec (JSON)**  \nThe architecture: load it on the Build page or pass it to the CLI."
    )
    st.download_button(
        "Download spec.json",
        spec_json,
        file_name=f"{run_id}.spec.json",
        mime="application/json",
        on_click="ignore",
        icon=":material/download:",
        key="dl.spec",
    )

st.subheader("Deploy it")
with st.container(border=True):
    service_panel(run_dir, model, json.loads(metadata.get("dataset", "{}")))
with st.container(border=True):
    quantize_panel(run_dir)
model_card_panel(run_dir)

st.subheader("Use it elsewhere")
st.code(
    f'''# Plain PyTorch, no LayerLab: model.py and the safetensors file side by side.
from model import load
model = load("{run_id}.safetensors")  # in eval mode
{usage(model)}

# From the bundle: predictions with the training preprocessing, or a retrain with the same settings.
#   python predict.py new_rows.csv --out predictions.csv
#   python train.py''',
    language="python",
)
with st.expander("model.py"):
    st.code(code, language="python")
with st.expander("Layers in this model"):
    st.json(json.loads(spec_json)["nodes"], expanded=False)
