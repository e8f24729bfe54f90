"""Export: take the trained weights away, with what is needed to load them."""

import json

import streamlit as st

from engine.errors import LayerLabError
from engine.export import load_model, onnx_bytes, read_weights, state_dict_bytes, torchscript_bytes
from engine.runs import runs_dir
from ui.common import page, show_error, trained_run

page("Export", "Download a trained model: weights as safetensors (the model spec travels inside) or a "
               "PyTorch state_dict, the spec as JSON, and the whole model as ONNX or TorchScript.")


@st.cache_data(max_entries=8, show_spinner="Exporting and checking the outputs…")
def exported(path: str, fmt: str, weights_mtime: float) -> bytes:
    model, _ = load_model(path)
    return onnx_bytes(model) if fmt == "onnx" else torchscript_bytes(model)


run_id = trained_run("Run", "export.run")["id"]
weights = (runs_dir() / run_id / "model.safetensors").read_bytes()
try:
    tensors, metadata = read_weights(weights)
except LayerLabError as e:
    show_error(e)
    st.stop()
spec_json = metadata["spec"]
n_params = sum(t.numel() for t in tensors.values())
st.caption(f"{len(tensors)} tensors · {n_params:,} values · {len(weights) / 1024:,.1f} KiB")

c1, c2, c3 = st.columns(3, border=True)
with c1:
    st.markdown("**safetensors**  \nFor any PyTorch code: safe to load, the spec and preprocessing travel in "
                "its metadata.")
    st.download_button("Download model.safetensors", weights, file_name=f"{run_id}.safetensors",
                       mime="application/octet-stream", on_click="ignore", icon=":material/download:",
                       type="primary", key="dl.safetensors")
with c2:
    st.markdown("**state_dict (.pt)**  \nFor `model.load_state_dict(torch.load(path, weights_only=True))`.")
    st.download_button("Download state_dict.pt", state_dict_bytes(tensors), file_name=f"{run_id}.pt",
                       mime="application/octet-stream", on_click="ignore", icon=":material/download:", key="dl.pt")
with c3:
    st.markdown("**Model spec (JSON)**  \nThe architecture: load it on the Build page or pass it to the CLI.")
    st.download_button("Download spec.json", spec_json, file_name=f"{run_id}.spec.json", mime="application/json",
                       on_click="ignore", icon=":material/download:", key="dl.spec")

c4, c5 = st.columns(2, border=True)
for col, fmt, title, text, ext in (
        (c4, "onnx", "ONNX", "For onnxruntime, TensorRT, OpenVINO or the browser: a dynamic batch dimension, input "
                             "`input`, output `output`. Checked against PyTorch at batch 1 and 7.", "onnx"),
        (c5, "torchscript", "TorchScript", "For `torch.jit.load` in Python or C++ (libtorch), without the model's "
                                           "code. Checked against PyTorch at batch 1 and 7.", "pt")):
    with col:
        st.markdown(f"**{title}**  \n{text}")
        path = runs_dir() / run_id / "model.safetensors"
        if st.button(f"Export {title}", key=f"make.{fmt}", icon=":material/build:"):
            st.session_state[f"export.{fmt}"] = run_id
        if st.session_state.get(f"export.{fmt}") == run_id:
            try:
                data = exported(str(path), fmt, path.stat().st_mtime)
                st.download_button(f"Download model.{ext}" if fmt == "onnx" else "Download model.torchscript.pt",
                                   data, file_name=f"{run_id}.{'onnx' if fmt == 'onnx' else 'torchscript.pt'}",
                                   mime="application/octet-stream", on_click="ignore", icon=":material/download:",
                                   key=f"dl.{fmt}")
            except LayerLabError as e:
                show_error(e)

st.subheader("Use it elsewhere")
st.code(f'''# With LayerLab installed: compiles the spec in the metadata and loads the weights.
from engine.export import load_model
model, meta = load_model("{run_id}.safetensors")

# Only the tensors, with no LayerLab at all:
from safetensors.torch import load_file
state_dict = load_file("{run_id}.safetensors")''', language="python")
with st.expander("Layers in this model"):
    st.json(json.loads(spec_json)["nodes"], expanded=False)
