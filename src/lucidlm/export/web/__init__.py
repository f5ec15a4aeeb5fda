"""A trained model as a static web page, opened from any web host with nothing installed: its forward pass,
sampling and explainer in plain JavaScript (`lucidlm export --format web`)."""

from lucidlm.export.web.model import check_web_exportable, export_web

__all__ = ["check_web_exportable", "export_web"]
