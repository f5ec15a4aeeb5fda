"""Static web pages, opened from any file host with nothing installed: the tutorial (`lucidlm tutorial --build`)."""

from lucidlm.export.web.tutorial import build_tutorial_site

__all__ = ["build_tutorial_site"]
