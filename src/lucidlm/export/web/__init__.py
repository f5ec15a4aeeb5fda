"""Static web pages, opened from any web host with nothing installed: the tutorial (`lucidlm tutorial --build`)
and a trained model with its forward pass (`lucidlm export --format web`)."""

from lucidlm.export.web.model import check_web_exportable, export_web
from lucidlm.export.web.tutorial import build_tutorial_site

__all__ = ["build_tutorial_site", "check_web_exportable", "export_web"]
