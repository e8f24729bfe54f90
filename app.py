"""LayerLab: the router and the shared sidebar (ui/router.py). Nothing else lives here."""

from ui import router

router.run()
