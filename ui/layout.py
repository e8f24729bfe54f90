"""The app's own CSS: metric values sized to fit their cards; and narrow windows (up to NARROW px, a laptop split
in half): the sidebar folds away once per page load, and the two-pane areas (Build's stack and form, Train's
settings and charts) stack, so no page scrolls sideways.

Streamlit folds its sidebar by itself only below 768 px ("auto"), and its columns stack only below 640 px."""

import streamlit as st

NARROW = 900
SPLIT = "ll-split"  # the key prefix of containers whose columns (nested ones too) stack when the window is narrow

CSS = f"""<style>
/* Metric cards sit four to a row beside the settings: values like 6.52e-05 or 227/5000 fit whole */
[data-testid="stMetricValue"] {{ font-size: 1.6rem; }}
@media (max-width: {NARROW}px) {{
  [class*="st-key-{SPLIT}"] [data-testid="stHorizontalBlock"] {{ flex-wrap: wrap; }}
  [class*="st-key-{SPLIT}"] [data-testid="stHorizontalBlock"] > [data-testid="stColumn"] {{
    min-width: 100%; width: 100%; flex: 1 1 100%; }}
  .block-container, [data-testid="stMainBlockContainer"] {{ padding-left: 1rem; padding-right: 1rem; }}
}}
</style>"""

# Folds the sidebar once per page load when the window is narrow; the user can open it again.
JS = f"""
export default function(component) {{
  if (window.__llFolded || window.innerWidth > {NARROW}) return;
  window.__llFolded = true;
  const fold = (tries) => {{
    const sidebar = document.querySelector('[data-testid="stSidebar"]');
    const button = document.querySelector('[data-testid="stSidebarCollapseButton"] button');
    if (sidebar && button && sidebar.getAttribute('data-collapsed') !== 'true') button.click();
    else if (tries > 0) setTimeout(() => fold(tries - 1), 100);
  }};
  fold(30);
}}
"""

_fold = st.components.v2.component("layerlab.fold", js=JS)


def narrow_layout() -> None:
    """Once per page run: the narrow-window rules."""
    st.html(CSS)
    _fold(key="layout.fold")


def split(name: str):
    """A container whose columns stack in a narrow window: `with split("build"): left, right = st.columns(...)`."""
    return st.container(key=f"{SPLIT}-{name}")
