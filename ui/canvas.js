export default function(component) {
  const { data, setTriggerValue, parentElement } = component;
  const W = data.node_w, PY = data.port_y;
  let root = parentElement.querySelector('.lc-root');
  if (!root) { root = document.createElement('div'); root.className = 'lc-root'; parentElement.appendChild(root); }
  root.innerHTML = '';
  // The view and selection outlive this element: Streamlit may mount the component afresh when the page around it
  // changes, and the user's pan and zoom must stay.
  const store = (window.__layerlabCanvas = window.__layerlabCanvas || {});
  const st = store[data.view_key] || (store[data.view_key] = { view: null, sel: new Set(), edge: null, fitted: '' });
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls;
                                    if (text !== undefined) e.textContent = text; return e; };
  const NS = 'http://www.w3.org/2000/svg';
  const svgEl = (tag, attrs) => { const e = document.createElementNS(NS, tag);
                                  for (const k in attrs) e.setAttribute(k, attrs[k]); return e; };
  const send = (ev) => setTriggerValue('event', ev);

  // The palette: drag an op onto the canvas, or onto an edge to insert it there (the outline's list takes it too).
  const pal = el('div', 'lc-palette'); pal.style.height = data.height + 'px';
  let fam = null;
  for (const op of data.palette) {
    if (op.family !== fam) { fam = op.family; pal.appendChild(el('div', 'll-fam', fam)); }
    const item = el('div', 'll-op', op.title);
    item.draggable = true; item.title = op.doc; item.dataset.op = op.op; item.style.setProperty('--fam', op.color);
    item.addEventListener('dragstart', (e) => { e.dataTransfer.setData('text/plain', 'op:' + op.op);
                                                e.dataTransfer.effectAllowed = 'copyMove'; });
    pal.appendChild(item);
  }
  root.appendChild(pal);

  const board = el('div', 'lc-board'); board.tabIndex = 0; board.style.height = data.height + 'px';
  board.setAttribute('aria-label', 'Model canvas. Keyboard users: edit the model with the outline and the forms.');
  const view = el('div', 'lc-view'); board.appendChild(view);
  const svg = svgEl('svg', { class: 'lc-edges' }); view.appendChild(svg);
  root.appendChild(board);

  const pos = {}; const nodeEls = {}; const byId = {};
  for (const n of data.nodes) { pos[n.id] = [n.x, n.y]; byId[n.id] = n; }
  const H = (id) => nodeEls[id] ? nodeEls[id].offsetHeight : 60;

  // Nodes
  for (const n of data.nodes) {
    const d = el('div', 'lc-node' + (n.source ? ' src' : '') + (n.error ? ' err' : n.warn ? ' warn' : '')
                        + (st.sel.has(n.id) || n.selected ? ' sel' : ''));
    d.dataset.id = n.id; d.style.width = W + 'px'; d.style.setProperty('--fam', n.color);
    if (n.paint) d.style.background = n.paint;
    const t = el('div', 't', n.title); t.appendChild(el('span', 'id', n.source ? '' : n.id)); d.appendChild(t);
    if (n.detail) d.appendChild(el('div', 'd', n.detail));
    d.appendChild(el('div', 's', n.shape));
    if (n.output) d.appendChild(el('span', 'tag', 'output'));
    if (n.error || n.warn) { const m = el('div', 'm', n.error || n.warn); m.title = n.error || n.warn; d.appendChild(m); }
    (n.fixes || []).forEach((label, i) => {
      const b = el('button', 'fix', label);
      b.addEventListener('pointerdown', (e) => e.stopPropagation());
      b.addEventListener('click', (e) => { e.stopPropagation(); send({action: 'fix', id: n.id, index: i}); });
      d.appendChild(b);
    });
    d.title = n.doc || '';
    if (!n.source) { const p = el('div', 'lc-port in'); p.style.top = (PY - 6) + 'px'; d.appendChild(p); }
    const o = el('div', 'lc-port out'); o.style.top = (PY - 6) + 'px'; o.dataset.id = n.id; d.appendChild(o);
    view.appendChild(d); nodeEls[n.id] = d;
  }
  const place = (id) => { nodeEls[id].style.left = pos[id][0] + 'px'; nodeEls[id].style.top = pos[id][1] + 'px'; };
  Object.keys(nodeEls).forEach(place);

  // Edges: a curve from the source's output port to the target's input port, labelled with the tensor's shape.
  // An edge that jumps over layers (a skip) arcs above them, so it is not hidden behind the row it skips.
  const curve = (a, b) => { const skip = b[0] - a[0] > data.skip_dx;  // as engine.canvas.curve
    const dx = skip ? data.gap_x : Math.max(40, Math.abs(b[0] - a[0]) / 2);
    const lift = skip ? Math.min(200, 60 + 0.15 * (b[0] - a[0])) : 0;
    return `M${a[0]},${a[1]} C${a[0] + dx},${a[1] - lift} ${b[0] - dx},${b[1] - lift} ${b[0]},${b[1]}`; };
  const outPt = (id) => [pos[id][0] + W, pos[id][1] + PY];
  const inPt = (id) => [pos[id][0], pos[id][1] + PY];
  const edges = data.edges.map((e) => {
    const g = svgEl('g', { 'data-edge': e.src + '>' + e.dst }); const p = svgEl('path', { class: 'e' + (e.skip ? ' skip' : '') });
    const hit = svgEl('path', { class: 'hit' }); const label = svgEl('text', { 'text-anchor': 'middle' });
    label.textContent = e.label; g.appendChild(p); g.appendChild(hit); g.appendChild(label); svg.appendChild(g);
    const edge = { ...e, p, hit, label };
    hit.addEventListener('pointerdown', (ev) => { ev.stopPropagation(); st.edge = e.src + '>' + e.dst;
      st.sel.clear(); paintSel(); board.focus(); });
    if (st.edge === e.src + '>' + e.dst) p.classList.add('sel');
    return edge;
  });
  const drawEdge = (e) => { const a = outPt(e.src), b = inPt(e.dst); const d = curve(a, b);
    e.p.setAttribute('d', d); e.hit.setAttribute('d', d);
    const mid = e.p.getTotalLength ? e.p.getPointAtLength(e.p.getTotalLength() / 2) : { x: (a[0] + b[0]) / 2, y: (a[1] + b[1]) / 2 };
    e.label.setAttribute('x', mid.x); e.label.setAttribute('y', mid.y - 5); };
  const drawEdges = () => edges.forEach(drawEdge);
  drawEdges();
  const paintSel = () => { for (const id in nodeEls) nodeEls[id].classList.toggle('sel', st.sel.has(id));
    edges.forEach((e) => e.p.classList.toggle('sel', st.edge === e.src + '>' + e.dst)); };

  // The view: kept across reruns; fitted to the graph the first time and when the page asks (a new layout).
  const fit = () => { const ids = Object.keys(pos); if (!ids.length) return;
    const xs = ids.map((i) => pos[i][0]), ys = ids.map((i) => pos[i][1]);
    const x0 = Math.min(...xs) - 30, y0 = Math.min(...ys) - 40, x1 = Math.max(...xs) + W + 30;
    const y1 = Math.max(...ids.map((i) => pos[i][1] + H(i))) + 40;
    const bw = board.clientWidth || 600, bh = data.height;
    // Readable first: below 60% the graph starts at its inputs, on the left, and the rest is a pan away.
    const k = Math.max(0.6, Math.min(1.1, bw / (x1 - x0), bh / (y1 - y0)));
    const x = (x1 - x0) * k <= bw ? (bw - (x1 - x0) * k) / 2 - x0 * k : 8 - x0 * k;
    const y = (y1 - y0) * k <= bh ? (bh - (y1 - y0) * k) / 2 - y0 * k : 40 - y0 * k;
    st.view = { k, x, y }; };
  const apply = () => { view.style.transform = `translate(${st.view.x}px, ${st.view.y}px) scale(${st.view.k})`; };
  const fitNow = () => { fit(); apply(); };
  if (!st.view || st.fitted !== data.fit_token) { requestAnimationFrame(() => { drawEdges(); fitNow(); });
                                                  st.fitted = data.fit_token; }
  else { apply(); requestAnimationFrame(drawEdges); }
  const world = (cx, cy) => { const r = board.getBoundingClientRect();
                              return [(cx - r.left - st.view.x) / st.view.k, (cy - r.top - st.view.y) / st.view.k]; };
  const zoomAt = (f, cx, cy) => { const r = board.getBoundingClientRect(); const px = cx - r.left, py = cy - r.top;
    const k = Math.max(0.15, Math.min(2.5, st.view.k * f)); st.view.x = px - (px - st.view.x) * k / st.view.k;
    st.view.y = py - (py - st.view.y) * k / st.view.k; st.view.k = k; apply(); };
  board.addEventListener('wheel', (e) => { e.preventDefault(); zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX, e.clientY); },
                         { passive: false });

  // Toolbar
  const bar = el('div', 'lc-bar');
  const btn = (label, title, on, disabled) => { const b = el('button', '', label); b.title = title; b.disabled = !!disabled;
    b.addEventListener('click', (e) => { e.stopPropagation(); on(); }); b.addEventListener('pointerdown', (e) => e.stopPropagation());
    bar.appendChild(b); return b; };
  btn('Undo', 'Undo (Ctrl+Z)', () => send({action: 'undo'}), !data.can_undo);
  btn('Redo', 'Redo (Ctrl+Shift+Z)', () => send({action: 'redo'}), !data.can_redo);
  btn('Auto-layout', 'Lay the graph out left to right by depth', () => send({action: 'layout'}));
  btn('Fit', 'Fit the graph in view', fitNow);
  btn('+', 'Zoom in', () => { const r = board.getBoundingClientRect(); zoomAt(1.2, r.left + r.width / 2, r.top + r.height / 2); });
  btn('−', 'Zoom out', () => { const r = board.getBoundingClientRect(); zoomAt(1 / 1.2, r.left + r.width / 2, r.top + r.height / 2); });
  board.appendChild(bar);
  board.appendChild(el('div', 'lc-help', 'Drag from a right port to a left port to connect · click an edge, Delete '
    + 'removes it · shift-drag to select several · wheel zooms'));

  // Which nodes a connection from `src` may join: the shape fits and it makes no cycle.
  const upstream = (src) => { const ins = {}; for (const e of data.edges) (ins[e.dst] = ins[e.dst] || []).push(e.src);
    const seen = new Set([src]); const stack = [src];
    while (stack.length) for (const n of ins[stack.pop()] || []) if (!seen.has(n)) { seen.add(n); stack.push(n); }
    return seen; };  // src and what it reads from: a connection into one of them would make a cycle
  const scope = board.getRootNode();  // the component lives in a shadow root: look there, not in the document
  const nodeAt = (cx, cy) => { const hit = (scope.elementFromPoint ? scope : document).elementFromPoint(cx, cy);
    const n = hit && hit.closest ? hit.closest('.lc-node') : null; return n && board.contains(n) ? n.dataset.id : null; };

  let drag = null;
  board.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) return;
    board.focus({ preventScroll: true });
    const port = e.target.closest('.lc-port.out'); const node = e.target.closest('.lc-node');
    if (port) {  // a new connection
      const src = port.dataset.id; const blocked = upstream(src); const key = byId[src].shape_key;
      for (const n of data.nodes) { if (n.source) continue;
        const ok = !blocked.has(n.id) && key !== null && (n.accepts || []).includes(key);
        nodeEls[n.id].classList.add(ok ? 'ok' : 'no');
        nodeEls[n.id].querySelector('.lc-port.in').classList.toggle('ok', ok); }
      const tmp = svgEl('path', { class: 'tmp' }); svg.appendChild(tmp);
      drag = { kind: 'wire', src, tmp };
    } else if (node) {
      const id = node.dataset.id;
      if (e.shiftKey) { if (st.sel.has(id)) st.sel.delete(id); else st.sel.add(id); }
      else if (!st.sel.has(id)) { st.sel = new Set([id]); }
      st.edge = null; paintSel();
      const start = {}; for (const s of st.sel) start[s] = [...pos[s]];
      drag = { kind: 'move', id, start, x: e.clientX, y: e.clientY, moved: false };
    } else if (e.shiftKey) {
      const box = el('div', 'lc-box'); board.appendChild(box);
      drag = { kind: 'box', box, x: e.clientX, y: e.clientY };
    } else {
      drag = { kind: 'pan', x: e.clientX, y: e.clientY, vx: st.view.x, vy: st.view.y, moved: false };
    }
    board.setPointerCapture(e.pointerId);
  });
  board.addEventListener('pointermove', (e) => {
    if (!drag) return;
    if (drag.kind === 'wire') { drag.tmp.setAttribute('d', curve(outPt(drag.src), world(e.clientX, e.clientY))); }
    else if (drag.kind === 'move') {
      const dx = (e.clientX - drag.x) / st.view.k, dy = (e.clientY - drag.y) / st.view.k;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (!drag.moved) return;
      for (const s in drag.start) { pos[s] = [drag.start[s][0] + dx, drag.start[s][1] + dy]; place(s); }
      drawEdges();
    } else if (drag.kind === 'pan') {
      if (Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) > 3) drag.moved = true;
      st.view.x = drag.vx + e.clientX - drag.x; st.view.y = drag.vy + e.clientY - drag.y; apply();
    } else if (drag.kind === 'box') {
      const r = board.getBoundingClientRect();
      const x0 = Math.min(drag.x, e.clientX), y0 = Math.min(drag.y, e.clientY);
      Object.assign(drag.box.style, { left: (x0 - r.left) + 'px', top: (y0 - r.top) + 'px',
        width: Math.abs(e.clientX - drag.x) + 'px', height: Math.abs(e.clientY - drag.y) + 'px' });
      drag.end = [e.clientX, e.clientY];
    }
  });
  board.addEventListener('pointerup', (e) => {
    const d = drag; drag = null; if (!d) return;
    if (d.kind === 'wire') {
      d.tmp.remove();
      for (const id in nodeEls) { nodeEls[id].classList.remove('ok', 'no');
        const p = nodeEls[id].querySelector('.lc-port.in'); if (p) p.classList.remove('ok'); }
      const dst = nodeAt(e.clientX, e.clientY);
      if (dst && dst !== d.src && !byId[dst].source) send({action: 'connect', src: d.src, dst});
    } else if (d.kind === 'move') {
      if (d.moved) { const moved = {}; for (const s in d.start) moved[s] = pos[s]; send({action: 'move', positions: moved}); }
      else if (!e.shiftKey && !byId[d.id].source) send({action: 'select', id: d.id});
    } else if (d.kind === 'box') {
      d.box.remove();
      if (d.end) { const a = world(d.x, d.y), b = world(d.end[0], d.end[1]);
        const [x0, x1] = [Math.min(a[0], b[0]), Math.max(a[0], b[0])], [y0, y1] = [Math.min(a[1], b[1]), Math.max(a[1], b[1])];
        for (const id in pos) if (pos[id][0] < x1 && pos[id][0] + W > x0 && pos[id][1] < y1 && pos[id][1] + H(id) > y0) st.sel.add(id);
        paintSel(); }
    } else if (d.kind === 'pan' && !d.moved) { st.sel.clear(); st.edge = null; paintSel(); }
  });

  board.addEventListener('keydown', (e) => {
    const mod = e.ctrlKey || e.metaKey;
    if (mod && e.key.toLowerCase() === 'z') { e.preventDefault(); send({action: e.shiftKey ? 'redo' : 'undo'}); }
    else if (mod && e.key.toLowerCase() === 'y') { e.preventDefault(); send({action: 'redo'}); }
    else if (e.key === 'Delete' || e.key === 'Backspace') {
      e.preventDefault();
      if (st.edge) { const [src, dst] = st.edge.split('>'); st.edge = null; send({action: 'disconnect', src, dst}); }
      else { const ids = [...st.sel].filter((i) => byId[i] && !byId[i].source); st.sel.clear();
             if (ids.length) send({action: 'remove', ids}); }
    } else if (e.key === 'Escape') { st.sel.clear(); st.edge = null; paintSel(); }
  });

  // Dropping a layer from the palette: onto an edge inserts it there, elsewhere adds it unconnected.
  const nearEdge = (w) => { let best = null, bestD = 14 / st.view.k;
    for (const e of edges) { const len = e.p.getTotalLength();
      for (let i = 1; i < 24; i++) { const q = e.p.getPointAtLength(len * i / 24);
        const dd = Math.hypot(q.x - w[0], q.y - w[1]); if (dd < bestD) { bestD = dd; best = e; } } }
    return best; };
  let near = null;
  board.addEventListener('dragover', (e) => { e.preventDefault(); board.classList.add('drop');
    const n = nearEdge(world(e.clientX, e.clientY));
    if (n !== near) { if (near) near.p.classList.remove('near'); near = n; if (near) near.p.classList.add('near'); } });
  board.addEventListener('dragleave', (e) => { if (!board.contains(e.relatedTarget)) { board.classList.remove('drop');
    if (near) near.p.classList.remove('near'); near = null; } });
  board.addEventListener('drop', (e) => {
    e.preventDefault(); board.classList.remove('drop'); if (near) near.p.classList.remove('near'); near = null;
    const what = e.dataTransfer.getData('text/plain'); if (!what.startsWith('op:')) return;
    const w = world(e.clientX, e.clientY); const edge = nearEdge(w);
    const at = [Math.round(w[0] - W / 2), Math.round(w[1] - PY)];
    if (edge) send({action: 'insert', op: what.slice(3), src: edge.src, dst: edge.dst, at});
    else send({action: 'add', op: what.slice(3), at});
  });
}
