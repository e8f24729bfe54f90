"""The Build page's outline: the model as a list of layers in the order they run (st.components.v2).

Drag a layer to reorder it, click one to open its form, or drop a layer from the canvas's palette into the list.
Each gesture comes back as one event dict; `engine.spec`'s editing functions apply it.
"""

import streamlit as st

CSS = """
.ll-root { font-family: var(--st-font, sans-serif); font-size: 0.9rem; color: var(--st-text-color, #1F2333); }
.ll-col { min-width: 0; border: 1px solid #E2E4EE; border-radius: 0.6rem; padding: 0.5rem; background: #FAFAFD;
          min-height: 6rem; }
.ll-head { font-weight: 600; font-size: 0.8rem; color: #5B6075; text-transform: uppercase; letter-spacing: .04em;
           margin: 0.1rem 0.2rem 0.4rem; }
.ll-node { display: flex; align-items: center; gap: 0.5rem; padding: 0.45rem 0.6rem; margin: 0.3rem 0;
           border-radius: 0.45rem; background: #FFFFFF; border: 1px solid #E2E4EE; border-left: 5px solid var(--fam);
           cursor: pointer; user-select: none; }
.ll-node.sel { box-shadow: 0 0 0 2px var(--st-primary-color, #4F46E5); }
.ll-node.err { border-color: #EF4444; background: #FEF2F2; }
.ll-node.warn { border-color: #F59E0B; background: #FFFBEB; }
.ll-node .in { font-size: 0.72rem; color: #8A8FA3; }
.ll-node .t { font-weight: 600; }
.ll-node .d { color: #5B6075; flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.ll-node .s { font-family: ui-monospace, monospace; font-size: 0.8rem; color: #4F46E5; white-space: nowrap; }
.ll-input { padding: 0.35rem 0.6rem; color: #5B6075; font-family: ui-monospace, monospace; font-size: 0.8rem; }
.ll-drop { height: 0; border-top: 3px solid var(--st-primary-color, #4F46E5); margin: -2px 0; }
.ll-hint { color: #8A8FA3; font-size: 0.78rem; margin: 0.4rem 0.2rem 0; }
"""

JS = """
export default function(component) {
  const { data, setTriggerValue, parentElement } = component;
  let root = parentElement.querySelector('.ll-root');
  if (!root) { root = document.createElement('div'); root.className = 'll-root'; parentElement.appendChild(root); }
  root.innerHTML = '';
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls;
                                    if (text !== undefined) e.textContent = text; return e; };
  const send = (ev) => setTriggerValue('event', ev);

  const stack = el('div', 'll-col ll-stack');
  stack.appendChild(el('div', 'll-head', 'Outline'));
  stack.appendChild(el('div', 'll-input', data.inputs));
  const rows = [];
  data.nodes.forEach((n) => {
    const row = el('div', 'll-node' + (n.selected ? ' sel' : '') + (n.error ? ' err' : n.warn ? ' warn' : ''));
    row.style.setProperty('--fam', n.color); row.draggable = true; row.dataset.id = n.id;
    row.title = n.error || n.warn || n.doc;
    row.appendChild(el('span', 't', n.title)); row.appendChild(el('span', 'd', n.detail));
    if (n.inputs) row.appendChild(el('span', 'in', '← ' + n.inputs));
    row.appendChild(el('span', 's', n.shape));
    row.addEventListener('click', () => send({action: 'select', id: n.id}));
    row.addEventListener('dragstart', (e) => { e.dataTransfer.setData('text/plain', 'node:' + n.id);
                                               e.dataTransfer.effectAllowed = 'move'; });
    stack.appendChild(row); rows.push(row);
  });
  stack.appendChild(el('div', 'll-hint', 'The layers in the order they run. Drag to reorder, click to edit.'));

  const marker = el('div', 'll-drop');
  const indexAt = (y) => { for (let i = 0; i < rows.length; i++) { const r = rows[i].getBoundingClientRect();
                                                                  if (y < r.top + r.height / 2) return i; }
                           return rows.length; };
  stack.addEventListener('dragover', (e) => { e.preventDefault(); const i = indexAt(e.clientY);
    if (i < rows.length) stack.insertBefore(marker, rows[i]); else stack.insertBefore(marker, stack.lastChild); });
  stack.addEventListener('dragleave', (e) => { if (!stack.contains(e.relatedTarget)) marker.remove(); });
  stack.addEventListener('drop', (e) => {
    e.preventDefault(); marker.remove();
    const what = e.dataTransfer.getData('text/plain'); const index = indexAt(e.clientY);
    if (what.startsWith('op:')) send({action: 'insert', op: what.slice(3), index});
    else if (what.startsWith('node:')) send({action: 'move', id: what.slice(5), index});
  });
  root.appendChild(stack);
}
"""

_component = st.components.v2.component("layerlab_stack", css=CSS, js=JS)


def layer_stack(nodes: list[dict], inputs: str, key: str) -> dict | None:
    """Draw the outline; return this rerun's gesture ({'action': ...}) or None."""
    result = _component(
        data={"nodes": nodes, "inputs": inputs}, key=key, on_event_change=lambda: None
    )
    return getattr(result, "event", None) if result is not None else None
